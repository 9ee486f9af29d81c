// Package config reads agent.toml, the one file that tells pullship-agent
// which nodes it runs, where releases come from, which trust root it pins and
// what it may touch on the host. See docs/agent.md for every key.
package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pullship/pullship/bundler/shared/cliutil"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// Config is a decoded and validated agent.toml.
type Config struct {
	// Nodes are the fleet nodes this host runs, each with the key that signs
	// its status reports.
	Nodes []Node `toml:"node"`
	// Remotes are tried in order on every poll: git URLs or directories.
	// In agent.toml either this list or [[remote]] tables (RemoteTable);
	// after Load it lists the URLs of every remote, in order, either way.
	Remotes []string `toml:"remotes"`
	// RemoteTable are the remotes with credentials ([[remote]]); after
	// Load it holds every remote, in order, those of Remotes too.
	RemoteTable []Remote `toml:"remote"`
	// StatusRemote, if set, is where the agent pushes its nodes' status
	// branches and reads the earlier waves' reports from ([status_remote]:
	// a URL and the credentials of a [[remote]] table), so that the release
	// remotes hold no status branch. Unset: the release remotes, as ever.
	StatusRemote *Remote `toml:"status_remote"`
	// StatusPeers are more status repositories ([[status_peers]]: the keys
	// of a [[remote]] table) the earlier waves' reports are read from
	// besides the agent's own (the status remote, or the release remote
	// polled): other regions' status repositories, when each region pushes
	// to one of its own. Nothing is pushed to them.
	StatusPeers []Remote `toml:"status_peers"`
	// Root is the pinned trust root file (root-N.toml, with root-N.toml.sig
	// beside it when N > 1 is pinned after a rotation).
	Root string `toml:"root"`
	// StateDir holds the agent's fetched objects, journal and persisted
	// versions. Nothing is written outside it but node files under AllowedDirs.
	StateDir string `toml:"state_dir"`
	// AllowedDirs are the host directories node files may be written under.
	AllowedDirs []string `toml:"allowed_dirs"`
	// PollInterval is the time between ref checks (default 30s).
	PollInterval Duration `toml:"poll_interval"`
	// Heartbeat is the time between status reports that change nothing
	// (default 5m).
	Heartbeat Duration `toml:"heartbeat"`
	// StallTimeout abandons a poll, fetch or push when the server sends
	// (or takes) nothing for this long; the next remote is tried
	// (default 60s).
	StallTimeout Duration `toml:"stall_timeout"`
	// StoreBudgetMiB bounds the object store on disk, in MiB (default
	// DefaultStoreBudgetMiB): a fetch that would take it beyond is refused.
	StoreBudgetMiB int64 `toml:"store_budget_mib"`
	// DockerHost overrides DOCKER_HOST (e.g. unix:///var/run/docker.sock).
	DockerHost string `toml:"docker_host"`
	// MetricsAddr serves Prometheus metrics at /metrics when set.
	MetricsAddr string `toml:"metrics_addr"`
	// LogFormat is "text" (default) or "json".
	LogFormat string `toml:"log_format"`
	// Weave is the weave executable for the weave attachment driver.
	Weave string `toml:"weave"`

	// dir is the directory agent.toml was read from; relative paths in it
	// are resolved against dir.
	dir string
}

// Remote is one [[remote]] table: a URL and the files that authenticate
// to it and pin its server. Paths are resolved against agent.toml.
type Remote struct {
	URL string `toml:"url"`
	// SSHKey is the private key (no passphrase, mode 0600) of ssh:// URLs.
	SSHKey string `toml:"ssh_key"`
	// KnownHosts pins the SSH server's host key (default ~/.ssh/known_hosts).
	KnownHosts string `toml:"known_hosts"`
	// Username and PasswordFile (first line: password or token, mode 0600)
	// are HTTP basic auth.
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	// CAFile holds PEM CAs trusted for this https:// remote, besides the
	// system's.
	CAFile string `toml:"ca_file"`
}

// Credentials are r's credentials as the git layer takes them. Without
// ssh_key an ssh:// remote uses the SSH agent at SSH_AUTH_SOCK, as the
// string form always did (a systemd service has none: give ssh_key).
func (r Remote) Credentials() repo.Credentials {
	return repo.Credentials{SSHKey: r.SSHKey, SSHAgent: true, KnownHosts: r.KnownHosts, Username: r.Username,
		PasswordFile: r.PasswordFile, CAFile: r.CAFile}
}

// Remote returns the remote with the given URL (as listed in Remotes, or
// the status remote).
func (c *Config) Remote(url string) (Remote, bool) {
	for _, r := range c.RemoteTable {
		if r.URL == url {
			return r, true
		}
	}
	if c.StatusRemote != nil && c.StatusRemote.URL == url {
		return *c.StatusRemote, true
	}
	for _, r := range c.StatusPeers {
		if r.URL == url {
			return r, true
		}
	}
	return Remote{}, false
}

// StatusURLs are the remotes status reports are pushed to, in order, and
// (the first) where the earlier waves' reports are read: the status remote
// when there is one, else the release remotes.
func (c *Config) StatusURLs() []string {
	if c.StatusRemote != nil {
		return []string{c.StatusRemote.URL}
	}
	return c.Remotes
}

// Node is one fleet node run by this host.
type Node struct {
	Name string `toml:"name"`
	// Key is the node's private key file (pullship-agent init writes it).
	Key string `toml:"key"`
	// AgeIdentity is the node's age identity file, which decrypts the files
	// a release encrypted to the node (docs/secrets.md). Default: Key with
	// its ".key" suffix replaced by ".age" (Key + ".age" when it has none).
	AgeIdentity string `toml:"age_identity"`
}

// DefaultAgeIdentity is the age identity path of a node whose status key is
// at key: key without ".key", plus ".age".
func DefaultAgeIdentity(key string) string {
	return strings.TrimSuffix(key, ".key") + ".age"
}

// Duration is a time.Duration written as a string in the syntax of every
// pullship duration flag ("30s", "5m", "1d").
type Duration struct{ time.Duration }

// UnmarshalText parses a duration (cliutil.ParseDuration).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := cliutil.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as UnmarshalText reads it.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(cliutil.FormatDuration(d.Duration)), nil
}

var nodeName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Load reads and validates the agent.toml at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read agent config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes agent.toml bytes read from path and validates them; relative
// paths are resolved against path's directory.
func Parse(path string, data []byte) (*Config, error) {
	var c Config
	if err := schema.DecodeStrict(path, data, &c); err != nil {
		return nil, err
	}
	c.dir = filepath.Dir(path)
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	if len(c.Nodes) == 0 {
		return fmt.Errorf("no [[node]]: name at least one node this host runs")
	}
	seen := map[string]bool{}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		if !nodeName.MatchString(n.Name) {
			return fmt.Errorf("node %q: a name is 1-63 of [a-z0-9._-], starting with a letter or digit", n.Name)
		}
		if seen[n.Name] {
			return fmt.Errorf("node %q listed twice", n.Name)
		}
		seen[n.Name] = true
		if n.Key == "" {
			return fmt.Errorf("node %q: no key (create one with pullship-agent init)", n.Name)
		}
		n.Key = c.abs(n.Key)
		if n.AgeIdentity == "" {
			n.AgeIdentity = DefaultAgeIdentity(n.Key)
		} else {
			n.AgeIdentity = c.abs(n.AgeIdentity)
		}
	}
	if err := c.validateRemotes(); err != nil {
		return err
	}
	if c.Root == "" {
		return fmt.Errorf("no root: pin the trust root file (root-N.toml)")
	}
	c.Root = c.abs(c.Root)
	if c.StateDir == "" {
		return fmt.Errorf("no state_dir")
	}
	c.StateDir = c.abs(c.StateDir)
	for i, d := range c.AllowedDirs {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" {
			return fmt.Errorf("allowed_dirs: %q must be a clean absolute path other than /", d)
		}
		c.AllowedDirs[i] = d
	}
	if c.PollInterval.Duration == 0 {
		c.PollInterval.Duration = 30 * time.Second
	}
	if c.PollInterval.Duration < 100*time.Millisecond || c.PollInterval.Duration > 24*time.Hour {
		return fmt.Errorf("poll_interval %s: must be between 100ms and 24h", c.PollInterval)
	}
	if c.Heartbeat.Duration == 0 {
		c.Heartbeat.Duration = 5 * time.Minute
	}
	if c.Heartbeat.Duration < time.Second || c.Heartbeat.Duration > 7*24*time.Hour {
		return fmt.Errorf("heartbeat %s: must be between 1s and 168h", c.Heartbeat)
	}
	if c.StallTimeout.Duration == 0 {
		c.StallTimeout.Duration = 60 * time.Second
	}
	if c.StallTimeout.Duration < 100*time.Millisecond || c.StallTimeout.Duration > time.Hour {
		return fmt.Errorf("stall_timeout %s: must be between 100ms and 1h", c.StallTimeout)
	}
	if c.StoreBudgetMiB == 0 {
		c.StoreBudgetMiB = DefaultStoreBudgetMiB
	}
	if c.StoreBudgetMiB < MinStoreBudgetMiB || c.StoreBudgetMiB > 1<<30 {
		return fmt.Errorf("store_budget_mib %d: must be between %d and %d", c.StoreBudgetMiB, MinStoreBudgetMiB, 1<<30)
	}
	switch c.LogFormat {
	case "":
		c.LogFormat = "text"
	case "text", "json":
	default:
		return fmt.Errorf("log_format %q: must be text or json", c.LogFormat)
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("metrics_addr %q: %w", c.MetricsAddr, err)
		}
	}
	if c.Weave == "" {
		c.Weave = "weave"
	}
	return nil
}

// DefaultStoreBudgetMiB is the object store's budget unless agent.toml
// says otherwise: 4 GiB holds the running release's images and an
// update's beside them (old and new, up to about 1.8 GiB of chunks each),
// the release history (a fetch of it is bounded at 256 MiB) and the
// peers' status branches, while a disk filled by junk stops at 4 GiB.
// Hosts of bigger images raise it (see docs/operations.md).
const DefaultStoreBudgetMiB = 4096

// MinStoreBudgetMiB is the smallest budget agent.toml may set: room for
// a release history and a few small images.
const MinStoreBudgetMiB = 64

// StoreBudget is the object store's budget in bytes.
func (c *Config) StoreBudget() int64 { return c.StoreBudgetMiB << 20 }

func (c *Config) validateRemotes() error {
	switch {
	case len(c.Remotes) > 0 && len(c.RemoteTable) > 0:
		return fmt.Errorf("both remotes = [...] and [[remote]] tables: use one form (a [[remote]] table per URL when any needs credentials)")
	case len(c.Remotes) == 0 && len(c.RemoteTable) == 0:
		return fmt.Errorf("no remotes: list at least one git URL or directory")
	case len(c.Remotes) > 0:
		for _, u := range c.Remotes {
			c.RemoteTable = append(c.RemoteTable, Remote{URL: u})
		}
	}
	c.Remotes = nil
	seen := map[string]bool{}
	for i := range c.RemoteTable {
		r := &c.RemoteTable[i]
		if r.URL == "" {
			return fmt.Errorf("[[remote]] %d: no url", i+1)
		}
		if err := c.checkRemote(r, "remote"); err != nil {
			return err
		}
		if seen[r.URL] {
			return fmt.Errorf("remote %q listed twice", repo.RedactURL(r.URL))
		}
		seen[r.URL] = true
		c.Remotes = append(c.Remotes, r.URL)
	}
	if r := c.StatusRemote; r != nil {
		if r.URL == "" {
			return fmt.Errorf("[status_remote]: no url")
		}
		if err := c.checkRemote(r, "status_remote"); err != nil {
			return err
		}
		if seen[r.URL] {
			return fmt.Errorf("status_remote %q is also a release remote: leave [status_remote] out to push status there", repo.RedactURL(r.URL))
		}
		seen[r.URL] = true
	}
	for i := range c.StatusPeers {
		r := &c.StatusPeers[i]
		if r.URL == "" {
			return fmt.Errorf("[[status_peers]] %d: no url", i+1)
		}
		if err := c.checkRemote(r, "status_peers"); err != nil {
			return err
		}
		// A peer that is also where this agent pushes or polls would
		// only be read twice: most likely a copied table not edited.
		if seen[r.URL] {
			return fmt.Errorf("status_peers %q is listed twice, or is also a release remote or the status_remote", repo.RedactURL(r.URL))
		}
		seen[r.URL] = true
	}
	return nil
}

// checkRemote checks a [[remote]], [status_remote] or [[status_peers]] table (what names it
// in errors) and resolves its paths against agent.toml.
func (c *Config) checkRemote(r *Remote, what string) error {
	shown := repo.RedactURL(r.URL)
	if isURL(r.URL) {
		u, err := url.Parse(r.URL)
		if err != nil {
			return fmt.Errorf("%s %q: %w", what, shown, repo.URLParseError(err))
		}
		switch u.Scheme {
		case "http", "https", "git", "ssh", "file":
		default:
			return fmt.Errorf("%s %q: scheme %q is not one of http, https, git, ssh, file", what, shown, u.Scheme)
		}
		if _, ok := u.User.Password(); ok && r.PasswordFile != "" {
			return fmt.Errorf("%s %q: a password in the URL and a password_file: keep it in the file only", what, shown)
		}
	} else {
		r.URL = c.abs(r.URL)
	}
	for _, p := range []*string{&r.SSHKey, &r.KnownHosts, &r.PasswordFile, &r.CAFile} {
		if *p != "" {
			*p = c.abs(*p)
		}
	}
	if r.Username != "" && r.PasswordFile == "" {
		return fmt.Errorf("%s %q: username without password_file", what, shown)
	}
	if err := r.Credentials().Check(); err != nil {
		return fmt.Errorf("%s %q: %w", what, shown, err)
	}
	return nil
}

// Allowed reports whether the absolute host path p lies under one of the
// allowed directories.
func (c *Config) Allowed(p string) bool {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return false
	}
	for _, d := range c.AllowedDirs {
		if strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// Node returns the [[node]] entry named name.
func (c *Config) Node(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// NodeNames lists the nodes this host runs, in config order.
func (c *Config) NodeNames() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Name
	}
	return out
}

func (c *Config) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(c.dir, p)
}

func isURL(s string) bool { return strings.Contains(s, "://") }
