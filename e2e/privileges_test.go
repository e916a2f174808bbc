package e2e

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireRoot skips a test that needs root, or fails it in CI.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("MAMORI_REQUIRE_TOOLS") != "" {
			t.Fatal("this test needs root (CI runs as root)")
		}
		t.Skip("needs root")
	}
}

// freeLowPort returns a free TCP port below 1024 on 127.0.0.1.
func freeLowPort(t *testing.T) int {
	t.Helper()
	for p := 600; p < 1024; p++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port below 1024")
	return 0
}

// statusField returns a field of /proc/PID/status.
func statusField(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, name)
	return ""
}

// TestServeDropsRoot: started as root with [server] user, serve binds a
// privileged port and then runs unprivileged for good; the Maildir gets
// [mailbox] group and mode, so a reader in that group can read mail and
// one outside it cannot.
func TestServeDropsRoot(t *testing.T) {
	requireRoot(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	mailGrp, err := user.LookupGroup("mail")
	if err != nil {
		t.Skipf("no group mail: %v", err)
	}
	mailGID, _ := strconv.Atoi(mailGrp.Gid)
	low := freeLowPort(t)
	in := newInstance(t, "priv.test", func(cfg string) string {
		cfg = setKey(cfg, "smtp", fmt.Sprintf(`"127.0.0.1:%d"`, low))
		cfg = setKey(cfg, "user", `"nobody"`)
		return strings.Replace(cfg, "# group = \"mail\"\n# mode = \"0640\"", "group = \"mail\"\nmode = \"0640\"", 1)
	})
	in.smtp = fmt.Sprintf("127.0.0.1:%d", low)
	// The test's temporary folders are root's 0700: let others pass
	// through to the data folder, as /var/lib would.
	for d := in.dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	// Offline commands run as root become [server] user before they write
	// data_dir, so what they create stays the server's.
	in.addUser("alice@priv.test", pw)
	in.mustCLI("", "dkim", "keygen", "--domain", "priv.test")
	nobodyUID, _ := strconv.Atoi(nobody.Uid)
	keys, _ := filepath.Glob(filepath.Join(in.dir, "data", "dkim", "*"))
	for _, p := range append(keys, filepath.Join(in.dir, "data", "mamori.db")) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid != nobodyUID {
			t.Errorf("%s written offline by root: owner %d, want nobody", p, uid)
		}
	}
	in.start()

	pid := in.cmd.Process.Pid
	want := nobody.Uid + " " + nobody.Uid + " " + nobody.Uid + " " + nobody.Uid
	if got := statusField(t, pid, "Uid"); got != want {
		t.Errorf("Uid: %s, want %s", got, want)
	}
	if got := statusField(t, pid, "CapEff"); got != "0000000000000000" {
		t.Errorf("CapEff: %s, want none", got)
	}
	if got := statusField(t, pid, "CapPrm"); got != "0000000000000000" {
		t.Errorf("CapPrm: %s, want none (root could be regained)", got)
	}
	nogroup := statusField(t, pid, "Gid")
	if g := strings.Fields(nogroup); len(g) != 4 || g[0] != nobody.Gid || g[1] != g[0] || g[2] != g[0] || g[3] != g[0] {
		t.Errorf("Gid: %s, want %s ×4", nogroup, nobody.Gid)
	}
	// Every thread, not only the main one.
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if !strings.Contains(string(b), "Uid:\t"+nobody.Uid+"\t") {
			t.Errorf("thread %s still has another uid", task.Name())
		}
	}
	if got := statusField(t, pid, "Groups"); !strings.Contains(" "+got+" ", " "+mailGrp.Gid+" ") {
		t.Errorf("Groups: %s, want %s among them", got, mailGrp.Gid)
	}

	// It still serves: the privileged port takes mail, and the
	// unprivileged server writes it (and the user store root created).
	if out, code := swaks(t, "--server", in.smtp, "--from", "bob@far.test", "--to", "alice@priv.test",
		"--body", "dropped-root test"); code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	in.waitMail("alice@priv.test", 1, 20*time.Second)
	in.addUser("carol@priv.test", pw) // through the API: the server writes its store

	msgs, _ := filepath.Glob(filepath.Join(in.maildirNew("alice@priv.test"), "*"))
	if len(msgs) != 1 {
		t.Fatalf("messages: %v", msgs)
	}
	for _, p := range []string{msgs[0], filepath.Dir(msgs[0]), filepath.Join(in.dir, "data", "mamori.db")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid != nobodyUID {
			t.Errorf("%s: owner %d, want nobody (%d)", p, uid, nobodyUID)
		}
	}
	fi, _ := os.Stat(msgs[0])
	if fi.Mode().Perm() != 0o640 || int(fi.Sys().(*syscall.Stat_t).Gid) != mailGID {
		t.Errorf("message file: mode %v group %d, want 0640 group mail", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	fi, _ = os.Stat(filepath.Dir(msgs[0]))
	if fi.Mode()&(fs.ModePerm|fs.ModeSetgid) != 0o750|fs.ModeSetgid {
		t.Errorf("new/: mode %v, want drwxr-s---", fi.Mode())
	}

	// A reader in group mail (not the owner, not root) reads the message;
	// the same reader without the group cannot.
	read := func(groups []uint32) error {
		cmd := exec.Command("cat", msgs[0])
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65533, Gid: 65533, Groups: groups}}
		out, err := cmd.CombinedOutput()
		if err == nil && !strings.Contains(string(out), "dropped-root test") {
			return fmt.Errorf("read something else: %q", out)
		}
		return err
	}
	if err := read([]uint32{uint32(mailGID)}); err != nil {
		t.Errorf("reader in group mail: %v", err)
	}
	if err := read(nil); err == nil {
		t.Error("a reader outside group mail read the message")
	}
	// Nothing else in data_dir is opened to the group.
	if fi, _ := os.Stat(filepath.Join(in.dir, "data", "mamori.db")); fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("mamori.db mode %v: opened beyond the owner", fi.Mode())
	}
}
