package admin

import "github.com/mamori-mail/mamori/internal/mailbox"

// Local manages the directory directly, for when no server is running
// (e.g. adding the first user before the first start).
type Local struct{ Dir *mailbox.Directory }

func (l Local) Users() ([]mailbox.User, error)            { return l.Dir.Users(), nil }
func (l Local) AddUser(addr, pw string) error             { return l.Dir.AddUser(addr, pw) }
func (l Local) DelUser(addr string) error                 { return l.Dir.DelUser(addr) }
func (l Local) SetPassword(addr, pw string) error         { return l.Dir.SetPassword(addr, pw) }
func (l Local) Domains() ([]string, error)                { return l.Dir.Domains(), nil }
func (l Local) AddDomain(d string) error                  { return l.Dir.AddDomain(d) }
func (l Local) DelDomain(d string) error                  { return l.Dir.DelDomain(d) }
func (l Local) Aliases() ([]mailbox.Alias, error)         { return l.Dir.Aliases(), nil }
func (l Local) AddAlias(a string, targets []string) error { return l.Dir.AddAlias(a, targets) }
func (l Local) DelAlias(a string) error                   { return l.Dir.DelAlias(a) }
