package cli

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// TestPrivateHostingCLI: init, release, verify, log, diff, status, prune
// and mirror run over a real sshd (deploy key, pinned host key) and a real
// nginx (test CA, basic auth), mirror giving each side its own
// credentials; no output carries the token or the deploy key; the refusals
// a user meets say what failed.
func TestPrivateHostingCLI(t *testing.T) {
	e := bundlertest.NewEnv(t)
	base := filepath.Join(e.Dir, "hosting")
	gittest.InitBare(t, base, "ssh.git")
	gittest.InitBare(t, base, "https.git")
	sshd := gittest.SSHD(t, base)
	nginx := gittest.NginxHTTPS(t, base)
	sshURL, httpsURL := sshd.RepoURL("ssh.git"), nginx.RepoURL("https.git")
	sshFlags := []string{"--ssh-key", sshd.ClientKey, "--known-hosts", sshd.KnownHosts}
	httpsFlags := []string{"--git-username", nginx.Username, "--git-password-file", nginx.PasswordFile, "--ca-file", nginx.CAFile}
	key, err := os.ReadFile(sshd.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"token": nginx.Password}
	for _, l := range strings.Split(string(key), "\n") {
		if len(l) > 40 && !strings.HasPrefix(l, "-----") {
			secrets["deploy key line "+l[:8]] = l
		}
	}
	var outputs strings.Builder
	pullship := func(want int, args ...string) (string, string) {
		t.Helper()
		code, out, errs := run(t, args...)
		outputs.WriteString(out + errs)
		if code != want {
			t.Fatalf("pullship %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errs)
		}
		return out, errs
	}
	fleet := bundlertest.WriteFleet(t, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{Image: "pullship-test/app:1", Template: "x\n",
		Target: "/etc/app/app.conf", Nodes: []bundlertest.Node{{Name: "cn", Region: "cn", Address: "10.0.0.1/24"}}})
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "app", Size: 100, Content: func() io.Reader { return imagetest.Random(1, 100) }})

	for _, tc := range []struct {
		url   string
		flags []string
	}{{sshURL, sshFlags}, {httpsURL, httpsFlags}} {
		cache := t.TempDir()
		with := func(args ...string) []string {
			return append(append(args, "--repo", tc.url, "--cache", cache), tc.flags...)
		}
		pullship(0, with("init", "--root", e.Root)...)
		pullship(0, with("release", "--fleet", fleet, "--image", img, "--key", e.Key.KeyPath, "-q")...)
		if err := os.WriteFile(filepath.Join(e.Dir, "fleet", "conf.tmpl"), []byte("y\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		pullship(0, with("release", "--fleet", fleet, "--image", img, "--key", e.Key.KeyPath, "-q")...)
		os.WriteFile(filepath.Join(e.Dir, "fleet", "conf.tmpl"), []byte("x\n"), 0o644)
		pullship(0, with("verify", "--root", e.Root, "--all")...)
		if out, _ := pullship(0, with("log", "--root", e.Root)...); !strings.Contains(out, "2") {
			t.Fatalf("log over %s: %s", tc.url, out)
		}
		pullship(0, with("diff", "1", "2")...)
		pullship(0, with("status", "--root", e.Root)...)
		pullship(0, with("prune", "--keep", "1")...)
	}
	// mirror: SRC over SSH with its flags, DST over HTTPS with the dst- ones.
	mirrored := nginx.RepoURL("mirror.git")
	gittest.InitBare(t, base, "mirror.git")
	args := append([]string{"mirror", sshURL, mirrored, "--cache", t.TempDir()}, sshFlags...)
	for i := 0; i < len(httpsFlags); i += 2 {
		args = append(args, "--dst-"+strings.TrimPrefix(httpsFlags[i], "--"), httpsFlags[i+1])
	}
	pullship(0, args...)
	pullship(0, "verify", "--repo", mirrored, "--cache", t.TempDir(), "--root", e.Root, "--git-username", nginx.Username,
		"--git-password-file", nginx.PasswordFile, "--ca-file", nginx.CAFile)

	// A password inside a URL still works, and is printed by no command.
	gittest.InitBare(t, base, "inline.git")
	inline := strings.Replace(nginx.RepoURL("inline.git"), "https://", "https://"+nginx.Username+":"+nginx.Password+"@", 1)
	args = append([]string{"mirror", sshURL, inline, "--cache", t.TempDir(), "--dst-ca-file", nginx.CAFile}, sshFlags...)
	if out, errs := pullship(0, args...); strings.Contains(out+errs, nginx.Password) || !strings.Contains(out, nginx.RepoURL("inline.git")) {
		t.Fatalf("mirror to a URL with a password printed:\n%s%s", out, errs)
	}

	// No --ssh-key: the SSH agent at $SSH_AUTH_SOCK, as ssh itself does.
	sock := filepath.Join(t.TempDir(), "agent.sock")
	sshAgent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := sshAgent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sshAgent.Process.Kill(); sshAgent.Wait() })
	t.Setenv("SSH_AUTH_SOCK", sock)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("ssh-agent did not listen: %v", err)
		}
	}
	_, errs := pullship(1, "log", "--repo", sshURL, "--cache", t.TempDir(), "--known-hosts", sshd.KnownHosts)
	if !strings.Contains(errs, "unable to authenticate") {
		t.Fatalf("empty SSH agent: %s", errs)
	}
	if out, err := exec.Command("ssh-add", sshd.ClientKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}
	pullship(0, "log", "--repo", sshURL, "--cache", t.TempDir(), "--known-hosts", sshd.KnownHosts)

	// Refusals.
	other := filepath.Join(e.Dir, "other_key")
	gittest.KeyGen(t, other)
	kh := filepath.Join(e.Dir, "known_hosts.other")
	sshd.WriteKnownHosts(kh, gittest.KeyGen(t, filepath.Join(e.Dir, "other_host")))
	wrongPW := filepath.Join(e.Dir, "wrong-token")
	os.WriteFile(wrongPW, []byte("nope\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--repo", sshURL, "--ssh-key", sshd.ClientKey, "--known-hosts", kh}, "host key of 127.0.0.1"},
		{[]string{"--repo", sshURL, "--ssh-key", other, "--known-hosts", sshd.KnownHosts}, "unable to authenticate"},
		{[]string{"--repo", httpsURL, "--git-username", nginx.Username, "--git-password-file", wrongPW, "--ca-file", nginx.CAFile}, "401"},
		{[]string{"--repo", httpsURL, "--git-username", nginx.Username, "--git-password-file", nginx.PasswordFile}, `TLS certificate of 127.0.0.1:\d+ refused: subject "CN=git.pullship.test", issuer "CN=pullship test CA"`},
	} {
		_, errs := pullship(1, append([]string{"log", "--cache", t.TempDir()}, tc.args...)...)
		if !strings.Contains(errs, strings.SplitN(tc.want, `\d`, 2)[0]) {
			t.Errorf("log %v: stderr %q, want %q", tc.args, errs, tc.want)
		}
	}

	// --help of every command that takes credentials.
	for _, c := range []string{"release", "verify", "log", "diff", "status", "init", "prune", "mirror"} {
		out, _ := pullship(0, c, "--help")
		for _, f := range []string{"--ssh-key", "--known-hosts", "--git-username", "--git-password-file", "--ca-file"} {
			if !strings.Contains(out, f) {
				t.Errorf("pullship %s --help lacks %s", c, f)
			}
		}
		if c == "mirror" && !strings.Contains(out, "--dst-ssh-key") {
			t.Errorf("pullship mirror --help lacks --dst-ssh-key")
		}
	}
	for what, s := range secrets {
		if strings.Contains(outputs.String(), s) {
			t.Errorf("output carries the %s", what)
		}
	}
}
