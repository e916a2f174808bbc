package smtpd

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// loginServer is the server side of the obsolete but still widely used
// LOGIN mechanism (draft-murchison-sasl-login): the server asks for the
// username, then the password, each as a base64 challenge. go-sasl only
// ships the client side.
type loginServer struct {
	auth     func(username, password string) error
	step     int
	username string
}

func newLoginServer(auth func(username, password string) error) sasl.Server {
	return &loginServer{auth: auth}
}

// maxLoginField bounds what a client may send as username or password.
const maxLoginField = 1024

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	if len(response) > maxLoginField {
		return nil, false, errors.New("response too long")
	}
	switch s.step {
	case 0:
		s.step = 1
		if len(response) == 0 {
			return []byte("Username:"), false, nil
		}
		// RFC 4954 initial response carries the username.
		s.username = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 1:
		s.username = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		return nil, true, s.auth(s.username, string(response))
	}
	return nil, false, errors.New("unexpected client response")
}
