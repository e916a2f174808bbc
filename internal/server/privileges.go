package server

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/privdrop"
)

func mailboxGroups(c *config.Config) []string {
	if c.Mailbox.Group != "" {
		return []string{c.Mailbox.Group}
	}
	return nil
}

// BecomeServiceUser runs after every port is bound and before any data is
// opened: with [server] user it makes data_dir that user's and switches
// the process to it for good. Without it, running as root is allowed but
// warned about. Commands that write data_dir offline call it too, so
// that nothing they create is root's.
func BecomeServiceUser(c *config.Config, log *slog.Logger) error {
	if c.Server.User == "" {
		if os.Geteuid() == 0 {
			log.Warn("running as root: set [server] user so that serve drops root after binding its ports")
		}
		return nil
	}
	id, err := privdrop.Lookup(c.Server.User, c.Server.Group, mailboxGroups(c)...)
	if err != nil {
		return fmt.Errorf("server.user: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		// Data a root-run command created stays usable. The mail tree is
		// owned at creation, so the walk does not enter a mailbox the
		// user already owns.
		mail := MailDir(c)
		skip := func(p string) bool {
			rel, err := filepath.Rel(mail, p)
			return err == nil && !strings.HasPrefix(rel, "..") && strings.Count(rel, string(filepath.Separator)) >= 1
		}
		if err := privdrop.Own(c.DataDir, id, skip); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	if err := privdrop.Drop(id); err != nil {
		return fmt.Errorf("server.user: %w", err)
	}
	log.Info("running unprivileged", "user", id.Name, "uid", id.UID, "gid", id.GID)
	return nil
}

// MailboxPerm resolves [mailbox] group and mode into how the store
// creates files (for serve, and for commands that open the store).
func MailboxPerm(c *config.Config) (mailbox.Perm, error) {
	mode, err := c.Mailbox.FileMode()
	if err != nil {
		return mailbox.Perm{}, err
	}
	p := mailbox.Perm{Mode: mode}
	if c.Mailbox.Group != "" {
		if p.GID, err = privdrop.LookupGroup(c.Mailbox.Group); err != nil {
			return mailbox.Perm{}, fmt.Errorf("mailbox.group: %w", err)
		}
		p.SetGroup = true
	}
	return p, nil
}

// mailboxPerm is MailboxPerm, and it opens data_dir to the group for
// search only (0710: its other files stay the owner's) so that a reader
// in the group reaches the mail tree — or makes it private again when the
// group option is gone.
func mailboxPerm(c *config.Config) (mailbox.Perm, error) {
	p, err := MailboxPerm(c)
	if err != nil {
		return p, err
	}
	if !p.SetGroup {
		if fi, err := os.Stat(c.DataDir); err == nil && fi.Mode().Perm() == 0o710 {
			os.Chmod(c.DataDir, 0o700) // the group option was removed: private again
		}
		return p, nil
	}
	if err := os.Lchown(c.DataDir, -1, p.GID); err != nil {
		return mailbox.Perm{}, fmt.Errorf("mailbox.group: data dir: %w (the server must be a member of group %q)", err, c.Mailbox.Group)
	}
	if err := os.Chmod(c.DataDir, 0o710); err != nil {
		return mailbox.Perm{}, fmt.Errorf("mailbox.group: data dir: %w", err)
	}
	return p, nil
}
