package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a Redis Cluster of a test's own: three masters on
// loopback, the 16384 hash slots split between them. URL is the
// redis+cluster:// URL naming every node.
type RedisCluster struct {
	Nodes []*Redis
	URL   string
}

// StartRedisCluster starts a three-master Redis Cluster for t and waits
// until every node reports cluster_state:ok. Keys of one hash tag live on
// one node, and the other nodes answer MOVED for them, so a client that
// does not follow the cluster's routing fails against it.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	c := &RedisCluster{}
	var addrs, buses []string
	for range 3 {
		// The cluster bus port is chosen free too: by default it is the
		// client port + 10000, which another process may hold.
		var bus string
		r := startRedisWith(t, "always", func() []string {
			_, bus, _ = net.SplitHostPort(freeAddr(t))
			return []string{"--cluster-enabled", "yes", "--cluster-port", bus,
				"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"}
		})
		c.Nodes = append(c.Nodes, r)
		addrs = append(addrs, r.Addr)
		buses = append(buses, bus)
	}
	c.URL = "redis+cluster://" + strings.Join(addrs, ",")
	slots := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	for i, r := range c.Nodes {
		if _, err := r.Do("CLUSTER", "ADDSLOTSRANGE", fmt.Sprint(slots[i][0]), fmt.Sprint(slots[i][1])); err != nil {
			t.Fatalf("cluster node %s: ADDSLOTSRANGE: %v", r.Addr, err)
		}
		if i == 0 {
			continue
		}
		host, port, _ := net.SplitHostPort(r.Addr)
		if _, err := c.Nodes[0].Do("CLUSTER", "MEET", host, port, buses[i]); err != nil {
			t.Fatalf("cluster: MEET %s: %v", r.Addr, err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, r := range c.Nodes {
		for {
			info, err := r.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s not ready: %v\n%s", r.Addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// RedisSentinel is a Redis master, a replica of it and one Sentinel
// watching them under the name Master. URL is the redis+sentinel:// URL a
// client is given: the Sentinel's address, never the master's.
type RedisSentinel struct {
	Master   *Redis
	Replica  *Redis
	Sentinel string // the Sentinel's address
	Name     string // the monitored master's name
	URL      string
}

// StartRedisSentinel starts a master, a replica and a Sentinel for t. The
// Sentinel takes a master it cannot reach for a second as down and
// promotes the replica (quorum 1), so a test can kill the master and see
// the failover a client must follow.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	s := &RedisSentinel{Name: "mamori-test"}
	s.Master = startRedis(t, "always")
	host, port, _ := net.SplitHostPort(s.Master.Addr)
	s.Replica = startRedis(t, "always", "--replicaof", host, port)

	bin := redisServer(t)
	s.Sentinel = freeAddr(t)
	_, sport, _ := net.SplitHostPort(s.Sentinel)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	cfg := fmt.Sprintf(`bind 127.0.0.1
port %s
dir %s
logfile %s
sentinel resolve-hostnames no
sentinel monitor %s %s %s 1
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 10000
sentinel parallel-syncs %s 1
`, sport, dir, filepath.Join(dir, "sentinel.log"), s.Name, host, port, s.Name, s.Name, s.Name)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis sentinel: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s.URL = "redis+sentinel://" + s.Sentinel + "/" + s.Name

	// Ready when the Sentinel names the master and the replica has
	// synchronised (a failover before that would lose the test's data).
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err1 := redisDo(s.Sentinel, "SENTINEL", "MASTER", s.Name)
		info, err2 := s.Replica.Do("INFO", "replication")
		if err1 == nil && err2 == nil && strings.Contains(info, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			t.Fatalf("sentinel on %s not ready: %v / %v\n%s\n%s", s.Sentinel, err1, err2, info, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// WaitReplicated waits up to 10 s until the replica holds field of the
// hash key (a write a test made on the master), so that a failover after
// it cannot lose it.
func (s *RedisSentinel) WaitReplicated(t testing.TB, key, field string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, err := s.Replica.Do("HEXISTS", key, field); err == nil && n == "1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s never got %s %s", s.Replica.Addr, key, field)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Role returns the replication role ("master" or "slave") r reports.
func (r *Redis) Role() string {
	info, err := r.Do("INFO", "replication")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "role:"); ok {
			return v
		}
	}
	return ""
}
