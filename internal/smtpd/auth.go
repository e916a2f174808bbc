package smtpd

import (
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/policy"
)

// authSession is a session on a submission listener: it offers AUTH.
type authSession struct{ *session }

func (a *authSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (a *authSession) Auth(mech string) (sasl.Server, error) {
	check := func(identity, username, password string) error {
		if identity != "" && identity != username {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authorization identity must match the login"}
		}
		return a.authenticate(username, password)
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(check), nil
	case sasl.Login:
		return newLoginServer(func(u, p string) error { return check("", u, p) }), nil
	}
	return nil, &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Unsupported authentication mechanism"}
}

// authenticate checks a login through the guard's login protocol
// (guard.Login): the password is checked — or, for an unknown user, a
// dummy hash of the same cost computed — for every login the guard does
// not refuse outright by address, so that neither the reply nor the time
// taken tells whether an account exists, is suspended, or whether a
// refused password was right. A wrong password and a suspended account get
// the same bytes: guard.InvalidCredentials.
func (a *authSession) authenticate(username, password string) error {
	username = strings.TrimSpace(username)
	if len(username) > 320 {
		username = username[:320]
	}
	login := strings.ToLower(username)
	if pa, err := policy.ParseAddress(username); err == nil {
		login = strings.ToLower(pa.String())
	}
	var err error
	verified := false
	verify := func() bool {
		verified = true
		err = a.srv.dir.Authenticate(username, password)
		return err == nil
	}
	var gd guard.Decision
	if g := a.srv.cfg.Guard; g != nil {
		gd = guard.Login(g, a.ip, login, verify)
	} else {
		verify()
	}
	if gd.Verdict != guard.Accept {
		a.sum.AuthFailures++
		// Only the log says whether the password was right.
		a.log.Warn("auth refused", "user", login, "rule", gd.Rule, "reason", gd.Text,
			"password_checked", verified, "password_ok", verified && err == nil)
		return a.guardRefusal("auth", login, gd)
	}
	if err != nil {
		a.sum.AuthFailures++
		a.log.Warn("auth failed", "user", login, "reason", authReason(err))
		return decisionReply(guard.InvalidCredentials)
	}
	a.user = login
	a.srv.dir.RecordLogin(login, time.Now())
	a.log.Info("auth", "user", a.user, "tls", a.tls)
	return nil
}

// decisionReply is the SMTP reply of a guard decision.
func decisionReply(d guard.Decision) *smtp.SMTPError {
	return &smtp.SMTPError{Code: d.Code, EnhancedCode: smtp.EnhancedCode(d.Enhanced), Message: d.Text}
}

// authReason gives the log a reason without ever including the password.
func authReason(err error) string {
	msg := err.Error()
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return msg
}
