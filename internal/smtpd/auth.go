package smtpd

import (
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/login"
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

// authenticate checks a login through the shared login checker (the
// guard's login protocol, the same for IMAP and POP3): neither the reply
// nor the time taken tells whether an account exists, is suspended, or
// whether a refused password was right.
func (a *authSession) authenticate(username, password string) error {
	lc := a.cfg.Login
	if lc == nil {
		lc = &login.Checker{Dir: a.srv.dir, Log: a.log, Metrics: a.cfg.Metrics}
		if g := a.cfg.Guard; g != nil {
			lc.Guard = g
		}
	}
	gen := a.cfg.Sessions.Gen(login.Key(username), "smtp")
	user, err := lc.Check(a.ip, "smtp", username, password)
	if err != nil {
		a.sum.AuthFailures++
		le, _ := login.AsError(err)
		d := guard.Decision{Verdict: guard.Reject, Code: le.Code, Enhanced: le.Enhanced, Text: le.Text, Rule: le.Rule}
		if le.Drop {
			d.Verdict = guard.Drop
		}
		if le.Rule == "" || le.Rule == login.AccountDisabled.Rule {
			return decisionReply(d)
		}
		return a.guardRefusal("auth", login.Canonical(username), d)
	}
	a.user = user
	a.log.Info("auth", "user", a.user, "tls", a.tls)
	nc, log := a.conn.Conn(), a.log
	a.forget = a.cfg.Sessions.Add(user, "smtp", gen, func() {
		log.Info("smtp session ended: credentials revoked", "user", user)
		_ = nc.Close()
	})
	return nil
}

// decisionReply is the SMTP reply of a guard decision.
func decisionReply(d guard.Decision) *smtp.SMTPError {
	return &smtp.SMTPError{Code: d.Code, EnhancedCode: smtp.EnhancedCode(d.Enhanced), Message: d.Text}
}
