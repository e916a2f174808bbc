package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"
)

// nodeTTL is how long a node's name stays claimed without a heartbeat.
const nodeTTL = 30 * time.Second

// ClaimNode keeps this process's claim on its node name in Redis until ctx
// ends, and says (once per clash, through the log and clash) when another
// process claims the same name: nodes skip changes that carry their own
// name, so two nodes with one name would silently ignore each other's
// bans and directory changes. The claim is a key holding a random id for
// this process, renewed every nodeTTL/3 and deleted on a clean stop; a
// crashed process's claim lapses after nodeTTL. It warns, it never stops
// the node.
func (s *Store) ClaimNode(ctx context.Context, clash func(node string)) {
	var b [8]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	key := "{" + s.prefix + "}:node:" + s.node
	warned := false
	claim := func() {
		cctx, cancel := s.ctx()
		defer cancel()
		ok, err := s.rdb.SetNX(cctx, key, id, nodeTTL).Result()
		if err != nil {
			return // unreachable: the outage is reported elsewhere
		}
		if ok {
			warned = false
			return
		}
		cur, err := s.rdb.Get(cctx, key).Result()
		switch {
		case err != nil:
		case cur == id:
			s.rdb.PExpire(cctx, key, nodeTTL)
			warned = false
		case !warned:
			warned = true
			s.log.Error("another process uses this node name: set a unique [store] node on each node", "node", s.node)
			if clash != nil {
				clash(s.node)
			}
		}
	}
	claim()
	t := time.NewTicker(nodeTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// A clean stop frees the name at once (only if it is ours).
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if cur, err := s.rdb.Get(cctx, key).Result(); err == nil && cur == id {
				s.rdb.Del(cctx, key)
			}
			cancel()
			return
		case <-t.C:
			claim()
		}
	}
}
