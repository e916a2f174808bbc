package e2e

// End-to-end proof of issue 12, items 4 and 5: an account under
// distributed password guessing is throttled for every network it never
// used — with the same reply for a right and a wrong password, and for a
// name that does not exist — while its owner keeps logging in and sending
// from the networks it uses; and failures from unrelated networks do not
// get the owner suspended when it then logs in from a new network.
// Networks are simulated with loopback sources: the guard judges IPv4 by
// /24, so every 127.N.0.x is a network of its own.

import (
	"crypto/tls"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// sendAs logs in from src on the submission listener and sends one message
// to rcpt.
func sendAs(src, addr, user, pass, rcpt, subject string) error {
	conn, err := dialFrom(src, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	msg := "From: " + user + "\r\nTo: " + rcpt + "\r\nSubject: " + subject + "\r\n\r\nhello\r\n"
	if err := c.SendMail(user, []string{rcpt}, strings.NewReader(msg)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return c.Quit()
}

func TestAccountsDistributedGuessing(t *testing.T) {
	in := newInstance(t, "ours.test", nil)
	for _, u := range []string{"dana@ours.test", "erin@ours.test", "colleague@ours.test"} {
		in.addUser(u, pw)
	}
	in.start()
	const home = "127.0.0.1" // the owners' network

	// No lockout by outsiders: a few failures for erin from unrelated
	// networks, then erin herself from a network she never used.
	if code, text := authFrom(home, in.submission, "erin@ours.test", pw); code != 235 {
		t.Fatalf("erin at home: %d %s", code, text)
	}
	for i := range 4 {
		if code, _ := authFrom(fmt.Sprintf("127.%d.0.1", 50+i), in.submission, "erin@ours.test", "guess"); code != 535 {
			t.Fatalf("guess %d for erin: %d, want 535", i+1, code)
		}
	}
	if code, text := authFrom("127.60.0.1", in.submission, "erin@ours.test", pw); code != 235 {
		t.Errorf("erin from a new network after outsiders' failures: %d %s, want 235", code, text)
	}

	// Distributed guessing against dana: one guess from each of 10
	// networks, then the account is throttled for every new network.
	if code, text := authFrom(home, in.submission, "dana@ours.test", pw); code != 235 {
		t.Fatalf("dana at home: %d %s", code, text)
	}
	for i := range 10 {
		if code, text := authFrom(fmt.Sprintf("127.%d.0.1", 100+i), in.submission, "dana@ours.test", fmt.Sprintf("guess-%d", i)); code != 535 {
			t.Fatalf("guess %d for dana: %d %s, want 535", i+1, code, text)
		}
	}
	const throttled = "Temporary authentication failure"
	wrongCode, wrongText := authFrom("127.120.0.1", in.submission, "dana@ours.test", "guess-x")
	rightCode, rightText := authFrom("127.121.0.1", in.submission, "dana@ours.test", pw)
	if wrongCode != 454 || wrongText != throttled {
		t.Errorf("wrong password after the attack: %d %q, want 454 %q", wrongCode, wrongText, throttled)
	}
	if rightCode != wrongCode || rightText != wrongText {
		t.Errorf("right password from a new network: %d %q; wrong one: %d %q — a password oracle", rightCode, rightText, wrongCode, wrongText)
	}
	// A name that does not exist under the same attack answers the same.
	for i := range 10 {
		authFrom(fmt.Sprintf("127.%d.0.2", 100+i), in.submission, "ghost@ours.test", fmt.Sprintf("guess-%d", i))
	}
	if code, text := authFrom("127.122.0.1", in.submission, "ghost@ours.test", pw); code != wrongCode || text != wrongText {
		t.Errorf("unknown name under attack: %d %q, want %d %q like an existing one", code, text, wrongCode, wrongText)
	}

	// The owner keeps working from its network, under attack: logs in and
	// sends, and the mail is delivered.
	if err := sendAs(home, in.submission, "dana@ours.test", pw, "colleague@ours.test", "still working"); err != nil {
		t.Fatalf("dana at home while under attack: %v", err)
	}
	if got := in.waitMail("colleague@ours.test", 1, 30*time.Second); len(got) != 1 || !strings.Contains(got[0], "still working") {
		t.Errorf("dana's mail not delivered: %d messages", len(got))
	}

	// Nobody was suspended; the administrator was told once about dana.
	snap := in.guardList()
	if len(snap.Suspended) != 0 {
		t.Errorf("suspended: %+v", snap.Suspended)
	}
	log := in.log()
	if n := len(regexp.MustCompile(`"msg":"alert".*"kind":"throttled".*"user":"dana@ours.test".*"rule":"auth.account_throttle"`).FindAllString(log, -1)); n != 1 {
		t.Errorf("%d throttle alerts for dana in the log, want 1", n)
	}
	if !regexp.MustCompile(`"kind":"throttled".*"user":"dana@ours.test".*"rule":"auth.right_password_refused"`).MatchString(log) {
		t.Error("no alert that dana's right password was refused from a new network")
	}
}
