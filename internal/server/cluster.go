package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mamori-mail/mamori/internal/config"
	"github.com/mamori-mail/mamori/internal/guard"
	"github.com/mamori-mail/mamori/internal/guard/share"
	"github.com/mamori-mail/mamori/internal/mailbox"
	"github.com/mamori-mail/mamori/internal/store"
	"github.com/mamori-mail/mamori/internal/store/redisstore"
)

// resyncEvery is how often a clustered node reloads the shared directory
// and guard decisions whole, for changes whose notification it missed.
const resyncEvery = 10 * time.Second

// cluster is this node's place among others ([store]): what the directory
// is kept in, and how the guard's decisions travel. Embedded, it is this
// node's own database and nothing travels. With Redis, the directory and
// the guard's decisions are shared; the guard's counters, its saved state,
// the queue, the Maildirs and the journal stay on the node.
type cluster struct {
	node  string
	dir   store.KV          // the directory's store
	redis *redisstore.Store // nil: embedded
	rep   *share.Replicator // nil: embedded
	// down is why Redis did not answer at start (nil: it did); the node
	// then starts from its local copy of the directory.
	down error
}

// openCluster opens the shared store the config asks for; st is the
// node's own database.
func openCluster(ctx context.Context, c *config.Config, st *store.Store, log *slog.Logger) (*cluster, error) {
	cl := &cluster{node: c.Store.Node, dir: st}
	if c.Store.Backend != "redis" {
		return cl, nil
	}
	rs, err := redisstore.Open(ctx, redisstore.Options{URL: c.Store.URL, Node: c.Store.Node,
		Log: log.With("stage", "cluster"), Unchecked: true})
	if err != nil {
		return nil, fmt.Errorf("open shared store: %w", err)
	}
	cl.down = rs.Ping(ctx)
	cl.redis, cl.dir = rs, rs
	cl.rep = share.New(rs, c.Store.Node, log.With("stage", "cluster"))
	log.Info("clustered mode: directory and guard decisions shared", "node", c.Store.Node, "redis", redisstore.Redact(c.Store.URL))
	return cl, nil
}

// OpenShared connects to the [store] url of a redis backend (serve, and
// the CLI when the server is not running).
func OpenShared(ctx context.Context, c *config.Config, log *slog.Logger) (*redisstore.Store, error) {
	rs, err := redisstore.Open(ctx, redisstore.Options{URL: c.Store.URL, Node: c.Store.Node, Log: log.With("stage", "cluster")})
	if err != nil {
		return nil, fmt.Errorf("open shared store: %w", err)
	}
	return rs, nil
}

// openDirectory opens the directory. Clustered, it also keeps a copy of
// it in the node's own database local, and starts from that copy when
// Redis does not answer: a node restarted during an outage serves logins
// and local mail as one that kept running does. Without a copy (a node
// that never reached Redis) it cannot start.
func (cl *cluster) openDirectory(local store.KV, domains []string, log *slog.Logger) (*mailbox.Directory, error) {
	if cl.redis == nil {
		return mailbox.OpenDirectory(cl.dir, domains)
	}
	if cl.down == nil {
		dir, err := mailbox.OpenDirectory(cl.dir, domains)
		if err != nil {
			return nil, err
		}
		// Redis answers, but if it lost its data (another dataset
		// marker, and no users or most of this node's copy missing),
		// serve from the copy — as a running node keeps its memory —
		// rather than overwrite the copy with what is left.
		if cp, err := mailbox.OpenDirectoryFromCopy(cl.dir, local, domains, false); err == nil && dir.LostData(cp) {
			log.Error("shared store looks like it lost its data (not the dataset this node's copy of the directory was saved from, most users missing): serving from the copy; restore Redis from its backup",
				"redis", cl.redis.Where(), "users_in_store", len(dir.Users()), "users_in_copy", len(cp.Users()))
			if err := cp.KeepCopy(local); err != nil {
				log.Warn("directory: cannot save the local copy", "err", err.Error())
			}
			return cp, nil
		}
		if err := dir.KeepCopy(local); err != nil {
			log.Warn("directory: cannot save the local copy", "err", err.Error())
		}
		return dir, nil
	}
	if !errors.Is(cl.down, store.ErrUnavailable) {
		// Redis answered, with an error (a wrong password, say): not an
		// outage to ride out on an old copy.
		return nil, fmt.Errorf("open shared store: %w", cl.down)
	}
	dir, err := mailbox.OpenDirectoryFromCopy(cl.dir, local, domains, true)
	if errors.Is(err, mailbox.ErrNoCopy) {
		return nil, fmt.Errorf("open shared store: %w; this node has no local copy of the directory to start from (it saves one once it has reached Redis)", cl.down)
	}
	if err != nil {
		return nil, err
	}
	log.Warn("shared store unreachable at start: serving logins and local mail from this node's copy of the directory until it answers; directory changes are refused meanwhile",
		"redis", cl.redis.Where(), "users", len(dir.Users()), "err", cl.down.Error())
	if err := dir.KeepCopy(local); err != nil {
		log.Warn("directory: cannot save the local copy", "err", err.Error())
	}
	return dir, nil
}

// guardConfig names the node in the guard's decisions and, clustered,
// gives it the replicator.
func (cl *cluster) guardConfig(gc *guard.Config) {
	gc.Node = cl.node
	if cl.rep != nil {
		gc.Replicator = cl.rep
		gc.Counters = share.NewCounters(cl.redis)
	}
}

// run keeps the directory and the guard in step with the other nodes
// until ctx ends; embedded, there is nothing to do.
func (cl *cluster) run(ctx context.Context, g *guard.Guard, dir *mailbox.Directory, log *slog.Logger) {
	if cl.redis == nil {
		return
	}
	go dir.Follow(ctx, resyncEvery, log.With("stage", "cluster"))
	go cl.rep.Run(ctx, g, resyncEvery)
	go g.ProbeShared(ctx, cl.redis.Ping, 2*time.Second)
	go cl.redis.ClaimNode(ctx, nil) // two nodes with one name would ignore each other
}

func (cl *cluster) close() {
	if cl.redis != nil {
		cl.redis.Close()
	}
}
