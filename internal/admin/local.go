package admin

import "github.com/mamori-mail/mamori/internal/mailbox"

// UsageReporter reports what a user's mail occupies; *mailbox.Store
// implements it.
type UsageReporter interface {
	Usage(addr string) (mailbox.Usage, error)
}

// Local manages the directory directly: inside the server, and from the
// CLI when no server is running (e.g. adding the first user before the
// first start).
type Local struct {
	Dir *mailbox.Directory
	// Store, when set, fills in each user's usage; DefaultQuota is
	// [mailbox] quota.
	Store        UsageReporter
	DefaultQuota int64
}

func (l Local) Users() ([]mailbox.User, error) {
	users := l.Dir.Users()
	for i := range users {
		u := &users[i]
		u.QuotaBytes = l.Dir.QuotaOf(u.Address, l.DefaultQuota)
		if l.Store != nil {
			us, err := l.Store.Usage(u.Address)
			if err != nil {
				return nil, err
			}
			u.Usage = us
		}
	}
	return users, nil
}
func (l Local) AddUser(addr, pw string) error           { return l.Dir.AddUser(addr, pw) }
func (l Local) DelUser(addr string) error               { return l.Dir.DelUser(addr) }
func (l Local) SetPassword(addr, pw string) error       { return l.Dir.SetPassword(addr, pw) }
func (l Local) SetQuota(addr string, quota int64) error { return l.Dir.SetQuota(addr, quota) }
func (l Local) SetDisabled(addr string, disabled bool) error {
	return l.Dir.SetDisabled(addr, disabled)
}
func (l Local) Domains() ([]string, error)                { return l.Dir.Domains(), nil }
func (l Local) AddDomain(d string) error                  { return l.Dir.AddDomain(d) }
func (l Local) DelDomain(d string) error                  { return l.Dir.DelDomain(d) }
func (l Local) Aliases() ([]mailbox.Alias, error)         { return l.Dir.Aliases(), nil }
func (l Local) AddAlias(a string, targets []string) error { return l.Dir.AddAlias(a, targets) }
func (l Local) DelAlias(a string) error                   { return l.Dir.DelAlias(a) }
