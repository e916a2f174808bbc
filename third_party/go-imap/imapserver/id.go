package imapserver

// mamori patch: this file adds the ID command (RFC 2971), which
// go-imap v2.0.0-beta.8 lacks on the server side.

import (
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/internal/imapwire"
)

// SessionID is an IMAP session which supports ID (RFC 2971). ID is
// advertised when the session implements it and Options.Caps has CapID.
type SessionID interface {
	Session

	// ID is given what the client sent (nil for NIL; unknown fields are
	// dropped) and returns the server's own fields (nil: NIL). Any number
	// of client fields is accepted: the command as a whole is bounded by
	// maxCommandSize, as every command is.
	ID(client *imap.IDData) *imap.IDData
}

func (c *Conn) handleID(dec *imapwire.Decoder) error {
	if !dec.ExpectSP() {
		return dec.Err()
	}
	var client *imap.IDData
	var atom string
	if dec.Atom(&atom) {
		if !dec.Expect(strings.EqualFold(atom, "NIL"), "NIL") {
			return dec.Err()
		}
	} else {
		client = new(imap.IDData)
		n := 0
		var key string
		err := dec.ExpectList(func() error {
			if n%2 == 0 {
				if !dec.ExpectString(&key) {
					return dec.Err()
				}
			} else {
				var value string
				if !dec.ExpectNString(&value) {
					return dec.Err()
				}
				setIDField(client, key, value)
			}
			n++
			return nil
		})
		if err != nil {
			return err
		}
		if n%2 != 0 {
			return newClientBugError("ID field without a value")
		}
	}
	if !dec.ExpectCRLF() {
		return dec.Err()
	}

	session, ok := c.session.(SessionID)
	if !ok {
		return newClientBugError("ID is not supported")
	}
	server := session.ID(client)

	enc := newResponseEncoder(c)
	defer enc.end()
	enc.Atom("*").SP().Atom("ID").SP()
	if server == nil {
		enc.NIL()
		return enc.CRLF()
	}
	var fields []string
	add := func(k, v string) {
		if v != "" {
			fields = append(fields, k, v)
		}
	}
	add("name", server.Name)
	add("version", server.Version)
	add("os", server.OS)
	add("os-version", server.OSVersion)
	add("vendor", server.Vendor)
	add("support-url", server.SupportURL)
	add("address", server.Address)
	add("date", server.Date)
	add("command", server.Command)
	add("arguments", server.Arguments)
	add("environment", server.Environment)
	if len(fields) == 0 {
		enc.NIL()
		return enc.CRLF()
	}
	enc.List(len(fields), func(i int) {
		enc.String(fields[i])
	})
	return enc.CRLF()
}

func setIDField(data *imap.IDData, key, value string) {
	switch strings.ToLower(key) {
	case "name":
		data.Name = value
	case "version":
		data.Version = value
	case "os":
		data.OS = value
	case "os-version":
		data.OSVersion = value
	case "vendor":
		data.Vendor = value
	case "support-url":
		data.SupportURL = value
	case "address":
		data.Address = value
	case "date":
		data.Date = value
	case "command":
		data.Command = value
	case "arguments":
		data.Arguments = value
	case "environment":
		data.Environment = value
	}
}
