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

func (a *authSession) authenticate(username, password string) error {
	username = strings.TrimSpace(username)
	if len(username) > 320 {
		username = username[:320]
	}
	login := strings.ToLower(username)
	if pa, err := policy.ParseAddress(username); err == nil {
		login = strings.ToLower(pa.String())
	}
	g := a.srv.cfg.Guard
	if g != nil {
		if gd := g.AuthCheck(a.ip, login); gd.Verdict != guard.Accept {
			a.log.Warn("auth refused", "user", login, "rule", gd.Rule, "reason", gd.Text)
			return a.guardRefusal("auth", login, gd)
		}
	}
	err := a.srv.dir.Authenticate(username, password)
	if g != nil {
		if gd := g.AuthResult(a.ip, login, err == nil); gd.Verdict != guard.Accept {
			a.log.Warn("auth refused", "user", login, "rule", gd.Rule, "reason", gd.Text, "password_ok", err == nil)
			return a.guardRefusal("auth", login, gd)
		}
	}
	if err != nil {
		a.sum.AuthFailures++
		a.log.Warn("auth failed", "user", login, "reason", authReason(err))
		return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	}
	a.user = login
	a.srv.dir.RecordLogin(login, time.Now())
	a.log.Info("auth", "user", a.user, "tls", a.tls)
	return nil
}

// authReason gives the log a reason without ever including the password.
func authReason(err error) string {
	msg := err.Error()
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return msg
}
