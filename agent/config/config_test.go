package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	good := `
remotes = ["http://127.0.0.1:9418/fleet.git", "mirror"]
root = "root-1.toml"
state_dir = "/var/lib/pullship"
allowed_dirs = ["/etc/vernemq"]
poll_interval = "5s"
heartbeat = "1d"

[[node]]
name = "cn"
key = "cn.key"
`
	c, err := Parse("/etc/pullship/agent.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Remotes[1] != "/etc/pullship/mirror" || c.Root != "/etc/pullship/root-1.toml" || c.Nodes[0].Key != "/etc/pullship/cn.key" {
		t.Fatalf("relative paths not resolved: %+v", c)
	}
	if c.PollInterval.Duration != 5*time.Second || c.Heartbeat.Duration != 24*time.Hour || c.LogFormat != "text" ||
		c.StoreBudget() != DefaultStoreBudgetMiB<<20 {
		t.Fatalf("defaults: %+v", c)
	}
	for p, want := range map[string]bool{
		"/etc/vernemq/vernemq.conf": true,
		"/etc/vernemq":              false,
		"/etc/vernemqx/a":           false,
		"/etc/vernemq/../passwd":    false,
		"etc/vernemq/a":             false,
	} {
		if c.Allowed(p) != want {
			t.Errorf("Allowed(%q) = %v, want %v", p, !want, want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	base := "remotes = [\"/r\"]\nroot = \"/root.toml\"\nstate_dir = \"/s\"\n"
	node := "[[node]]\nname = \"cn\"\nkey = \"/k\"\n"
	for _, tc := range []struct{ src, want string }{
		{base, "no [[node]]"},
		{base + "bogus = 1\n" + node, `agent.toml:4: unknown key "bogus"`},
		{base + node + node, `node "cn" listed twice`},
		{base + "[[node]]\nname = \"../x\"\nkey = \"/k\"\n", "a name is"},
		{"root = \"/r\"\nstate_dir = \"/s\"\n" + node, "no remotes"},
		{"remotes = [\"ftp://x/y\"]\nroot = \"/r\"\nstate_dir = \"/s\"\n" + node, `scheme "ftp"`},
		{base + "allowed_dirs = [\"/\"]\n" + node, "allowed_dirs"},
		{base + "allowed_dirs = [\"/etc/../x\"]\n" + node, "allowed_dirs"},
		{base + "poll_interval = \"1ns\"\n" + node, "poll_interval"},
		{base + "log_format = \"xml\"\n" + node, "log_format"},
		{base + "store_budget_mib = 10\n" + node, "store_budget_mib 10: must be between 64"},
		{base + "store_budget_mib = -1\n" + node, "store_budget_mib"},
		{base + "metrics_addr = \"nope\"\n" + node, "metrics_addr"},
	} {
		_, err := Parse("agent.toml", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("remotes = [\"/r\"]\nroot = \"/root.toml\"\nstate_dir = \"/s\"\n[[node]]\nname = \"cn\"\nkey = \"/k\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("/a/agent.toml", data)
		if err != nil {
			return
		}
		for _, n := range c.Nodes {
			if !nodeName.MatchString(n.Name) {
				t.Fatalf("accepted bad node name %q", n.Name)
			}
		}
	})
}

// TestRemoteCredentialsNotEchoed: a remote URL that fails to parse, or has
// a scheme the agent does not speak, is named in the error without its
// credentials (url.Parse's own message would echo them too).
func TestRemoteCredentialsNotEchoed(t *testing.T) {
	for _, remote := range []string{
		"https://deploy:s3cret@git.example.com:99x/fleet.git",
		"https://s3cret@git.example.com:99x/fleet.git",
		"https://deploy:s3cret@git.example.com/%zz",
		"ftp://deploy:s3cret@git.example.com/fleet.git",
		"ftp://s3cret@git.example.com/fleet.git",
	} {
		conf := "remotes = [\"" + remote + "\"]\nroot = \"root-1.toml\"\nstate_dir = \"s\"\n[[node]]\nname = \"cn\"\nkey = \"cn.key\"\n"
		_, err := Parse("/etc/pullship/agent.toml", []byte(conf))
		if err == nil {
			t.Fatalf("%s: accepted", remote)
		}
		if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "git.example.com") {
			t.Errorf("%s: %v", remote, err)
		}
	}
}

func TestRemoteTables(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"deploy_key": 0o600, "token": 0o600, "loose": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	top := "root = \"root-1.toml\"\nstate_dir = \"state\"\n"
	rest := "[[node]]\nname = \"cn\"\nkey = \"cn.key\"\n"
	good := top + `
[[remote]]
url = "ssh://git@git.example.com/ops/r.git"
ssh_key = "deploy_key"
known_hosts = "known_hosts"

[[remote]]
url = "https://git.example.com/ops/r.git"
username = "pullship"
password_file = "token"
ca_file = "/etc/pullship/ca.pem"

[[remote]]
url = "mirror"
` + rest
	c, err := Parse(filepath.Join(dir, "agent.toml"), []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ssh://git@git.example.com/ops/r.git", "https://git.example.com/ops/r.git", filepath.Join(dir, "mirror")}
	if strings.Join(c.Remotes, " ") != strings.Join(want, " ") {
		t.Fatalf("Remotes = %v, want %v", c.Remotes, want)
	}
	ssh, _ := c.Remote(want[0])
	https, _ := c.Remote(want[1])
	if ssh.SSHKey != filepath.Join(dir, "deploy_key") || ssh.KnownHosts != filepath.Join(dir, "known_hosts") ||
		https.PasswordFile != filepath.Join(dir, "token") || https.CAFile != "/etc/pullship/ca.pem" || https.Username != "pullship" {
		t.Fatalf("paths not resolved against agent.toml: %+v %+v", ssh, https)
	}
	// The string list still works, as remotes with no credentials.
	c, err = Parse(filepath.Join(dir, "agent.toml"), []byte(top+"remotes = [\"git://h/r.git\"]\n"+rest))
	if err != nil || len(c.RemoteTable) != 1 || c.RemoteTable[0].URL != "git://h/r.git" || c.Remotes[0] != "git://h/r.git" {
		t.Fatalf("string list: %+v, %v", c, err)
	}

	for _, tc := range []struct{ src, want string }{
		{"remotes = [\"/r\"]\n[[remote]]\nurl = \"/s\"\n", "use one form"},
		{"[[remote]]\nurl = \"https://h/r.git\"\npassword_file = \"loose\"\n", "password file " + filepath.Join(dir, "loose") + " has mode 0644"},
		{"[[remote]]\nurl = \"ssh://h/r.git\"\nssh_key = \"loose\"\n", "ssh key " + filepath.Join(dir, "loose") + " has mode 0644"},
		{"[[remote]]\nurl = \"https://h/r.git\"\npassword_file = \"absent\"\n", "no such file"},
		{"[[remote]]\nurl = \"https://u:hunter2@h/r.git\"\npassword_file = \"token\"\n", "keep it in the file only"},
		{"[[remote]]\nurl = \"/r\"\n[[remote]]\nurl = \"/r\"\n", "listed twice"},
		{"[[remote]]\nssh_key = \"deploy_key\"\n", "no url"},
	} {
		_, err := Parse(filepath.Join(dir, "agent.toml"), []byte(top+tc.src+rest))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error carries the URL's password: %v", err)
		}
	}
}

// TestStatusRemote: [status_remote] takes the keys of a [[remote]] table,
// checked and resolved the same way; it is where reports go, and it is not
// one of the release remotes.
func TestStatusRemote(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"token": 0o600, "loose": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	top := "remotes = [\"git://h/r.git\"]\nroot = \"root-1.toml\"\nstate_dir = \"state\"\n"
	rest := "[[node]]\nname = \"cn\"\nkey = \"cn.key\"\n"
	c, err := Parse(filepath.Join(dir, "agent.toml"), []byte(top+`
[status_remote]
url = "https://git.example.com/ops/status.git"
username = "pullship"
password_file = "token"
ca_file = "ca.pem"
`+rest))
	if err != nil {
		t.Fatal(err)
	}
	sr, ok := c.Remote("https://git.example.com/ops/status.git")
	if !ok || sr.PasswordFile != filepath.Join(dir, "token") || sr.CAFile != filepath.Join(dir, "ca.pem") || sr.Username != "pullship" {
		t.Fatalf("status remote: %+v (found %v)", sr, ok)
	}
	if got := c.StatusURLs(); len(got) != 1 || got[0] != sr.URL || len(c.Remotes) != 1 {
		t.Fatalf("StatusURLs = %v, Remotes = %v", got, c.Remotes)
	}
	if c, err = Parse(filepath.Join(dir, "agent.toml"), []byte(top+rest)); err != nil || strings.Join(c.StatusURLs(), " ") != "git://h/r.git" {
		t.Fatalf("without a status remote: %v, %v", c.StatusURLs(), err)
	}
	if c, err = Parse(filepath.Join(dir, "agent.toml"), []byte(top+"[status_remote]\nurl = \"status\"\n"+rest)); err != nil ||
		c.StatusRemote.URL != filepath.Join(dir, "status") {
		t.Fatalf("a directory status remote: %+v, %v", c.StatusRemote, err)
	}

	for _, tc := range []struct{ src, want string }{
		{"[status_remote]\nurl = \"https://h/s.git\"\npassword_file = \"loose\"\n", "status_remote \"https://h/s.git\": password file " + filepath.Join(dir, "loose") + " has mode 0644"},
		{"[status_remote]\nurl = \"https://u:hunter2@h/s.git\"\npassword_file = \"token\"\n", "keep it in the file only"},
		{"[status_remote]\nurl = \"https://h/s.git\"\nusername = \"u\"\n", "status_remote \"https://h/s.git\": username without password_file"},
		{"[status_remote]\nurl = \"ftp://h/s.git\"\n", "status_remote \"ftp://h/s.git\": scheme \"ftp\""},
		{"[status_remote]\nurl = \"git://h/r.git\"\n", "also a release remote"},
		{"[status_remote]\nssh_key = \"token\"\n", "[status_remote]: no url"},
		{"[status_remote]\nurl = \"git://h/s.git\"\nbogus = 1\n", "unknown key"},
	} {
		_, err := Parse(filepath.Join(dir, "agent.toml"), []byte(top+tc.src+rest))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error carries the URL's password: %v", err)
		}
	}
}

// TestStatusPeers: [[status_peers]] tables take the keys of a [[remote]]
// table, checked by the same code; each is a repository of its own.
func TestStatusPeers(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "loose"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	top := "remotes = [\"git://h/r.git\"]\nroot = \"root-1.toml\"\nstate_dir = \"state\"\n[status_remote]\nurl = \"git://h/eu.git\"\n"
	rest := "[[node]]\nname = \"cn\"\nkey = \"cn.key\"\n"
	c, err := Parse(filepath.Join(dir, "agent.toml"), []byte(top+`
[[status_peers]]
url = "https://git.example.com/ops/status-us.git"
ca_file = "ca.pem"

[[status_peers]]
url = "status-ap"
`+rest))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.StatusPeers) != 2 || c.StatusPeers[1].URL != filepath.Join(dir, "status-ap") {
		t.Fatalf("status peers: %+v", c.StatusPeers)
	}
	if p, ok := c.Remote("https://git.example.com/ops/status-us.git"); !ok || p.CAFile != filepath.Join(dir, "ca.pem") {
		t.Fatalf("status peer: %+v (found %v)", p, ok)
	}
	if got := c.StatusURLs(); len(got) != 1 || got[0] != "git://h/eu.git" {
		t.Fatalf("StatusURLs = %v: reports are pushed to the status remote only", got)
	}
	for _, tc := range []struct{ src, want string }{
		{"[[status_peers]]\nurl = \"https://h/s.git\"\npassword_file = \"loose\"\n", "status_peers \"https://h/s.git\": password file " + filepath.Join(dir, "loose") + " has mode 0644"},
		{"[[status_peers]]\nurl = \"ftp://h/s.git\"\n", "status_peers \"ftp://h/s.git\": scheme \"ftp\""},
		{"[[status_peers]]\nurl = \"git://h/r.git\"\n", "listed twice, or is also a release remote"},
		{"[[status_peers]]\nurl = \"git://h/eu.git\"\n", "listed twice, or is also a release remote or the status_remote"},
		{"[[status_peers]]\nurl = \"git://h/us.git\"\n[[status_peers]]\nurl = \"git://h/us.git\"\n", "listed twice"},
		{"[[status_peers]]\nssh_key = \"k\"\n", "[[status_peers]] 1: no url"},
		{"[[status_peers]]\nurl = \"git://h/s.git\"\nbogus = 1\n", "unknown key"},
	} {
		_, err := Parse(filepath.Join(dir, "agent.toml"), []byte(top+tc.src+rest))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}
