package pop3d

import (
	"errors"
	"fmt"
	"io"

	"github.com/mamori-mail/mamori/internal/mailbox"
)

// maildrop is what a session needs of the user's INBOX; *mailbox.Folder
// implements it. The seam keeps the protocol code testable on its own
// (the fuzz target drives sessions over an in-memory maildrop).
type maildrop interface {
	Snapshot() (*mailbox.Snapshot, error)
	Open(uid uint32) (io.ReadSeekCloser, error)
	StoreFlags(uids []uint32, op mailbox.FlagOp, flags []string) error
	Expunge(uids []uint32) ([]uint32, error)
	Close() error
}

// openInbox opens user's INBOX in st.
func openInbox(st *mailbox.Store, user string) (maildrop, error) {
	if st == nil {
		return nil, errors.New("pop3d: no mailbox store configured")
	}
	u, err := st.User(user)
	if err != nil {
		return nil, fmt.Errorf("open mailbox of %s: %w", user, err)
	}
	f, err := u.Open("INBOX")
	if err != nil {
		return nil, fmt.Errorf("open INBOX of %s: %w", user, err)
	}
	return f, nil
}
