package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/state"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// TestPrivateHosting runs a fleet through private repositories on a real
// sshd (deploy key, pinned host key) and a real nginx (TLS from a test CA,
// basic auth with a token file): mirror to each, the agent converges from
// each with [[remote]] credentials and pushes its status there with them,
// pullship status reads it back. The secrets (the token, the deploy key)
// appear in no output: the process's output (JSON log), its crash output
// (a panic mid-apply with every goroutine's stack), a text log,
// metrics, status.toml, the state directory.
func TestPrivateHosting(t *testing.T) {
	h := newDockerHost(t)
	panicAt := string(state.StepFiles)
	base := filepath.Join(h.env.Dir, "hosting")
	sshBare := gittest.InitBare(t, base, "ssh.git")
	httpsBare := gittest.InitBare(t, base, "https.git")
	sshd := gittest.SSHD(t, base)
	nginx := gittest.NginxHTTPS(t, base)
	sshURL, httpsURL := sshd.RepoURL("ssh.git"), nginx.RepoURL("https.git")
	sshCreds := repo.Credentials{SSHKey: sshd.ClientKey, KnownHosts: sshd.KnownHosts}
	httpsCreds := repo.Credentials{Username: nginx.Username, PasswordFile: nginx.PasswordFile, CAFile: nginx.CAFile}
	key, err := os.ReadFile(sshd.ClientKey)
	must(t, err)
	secrets := map[string]string{"token": nginx.Password, "deploy key": keyBody(string(key))}

	otherHosts := filepath.Join(h.env.Dir, "known_hosts.other")
	sshd.WriteKnownHosts(otherHosts, gittest.KeyGen(t, filepath.Join(h.env.Dir, "other_host")))
	wrongToken := filepath.Join(h.env.Dir, "wrong-token")
	must(t, os.WriteFile(wrongToken, []byte("not-the-token\n"), 0o600))

	h.release(h.image("a"), "version = 1\n", ping)
	ctx := context.Background()
	for _, tc := range []struct {
		url, bare string
		creds     repo.Credentials
		table     string
		bad       string // a table the server refuses
		badSays   string
	}{
		{sshURL, sshBare, sshCreds, fmt.Sprintf("ssh_key = %q\nknown_hosts = %q\n", sshd.ClientKey, sshd.KnownHosts),
			fmt.Sprintf("ssh_key = %q\nknown_hosts = %q\n", sshd.ClientKey, otherHosts), "it presented ssh-ed25519 " + gittest.Fingerprint(t, sshd.KnownHosts)},
		{httpsURL, httpsBare, httpsCreds, fmt.Sprintf("username = %q\npassword_file = %q\nca_file = %q\n", nginx.Username, nginx.PasswordFile, nginx.CAFile),
			fmt.Sprintf("username = %q\npassword_file = %q\nca_file = %q\n", nginx.Username, wrongToken, nginx.CAFile), "401"},
	} {
		t.Run(strings.SplitN(tc.url, ":", 2)[0], func(t *testing.T) {
			opts, err := tc.creds.Options(tc.url)
			must(t, err)
			src, err := bundler.Open(ctx, h.env.Repo, filepath.Join(t.TempDir(), "cache"), repo.Options{})
			must(t, err)
			dst, err := bundler.OpenMirrorTarget(ctx, tc.url, opts)
			must(t, err)
			if _, err := src.Mirror(ctx, dst, bundler.MirrorOptions{}); err != nil {
				t.Fatalf("mirror to %s: %v", tc.url, err)
			}

			state := filepath.Join(t.TempDir(), "state")
			p := filepath.Join(h.env.Dir, "agent.toml")
			writeConfig := func(table string) *config.Config {
				must(t, os.WriteFile(p, []byte(fmt.Sprintf("root = %q\nstate_dir = %q\nallowed_dirs = [%q]\nlog_format = \"json\"\n\n[[remote]]\nurl = %q\n%s\n[[node]]\nname = %q\nkey = \"node.key\"\n",
					h.env.Root, state, h.etc, tc.url, table, h.node)), 0o644))
				cfg, err := config.Load(p)
				must(t, err)
				return cfg
			}
			var logs bytes.Buffer
			reg := prometheus.NewRegistry()
			metrics := agent.NewMetrics(reg)
			pass := func(cfg *config.Config) (agent.Outcome, error) {
				a, err := agent.New(cfg, agent.Options{Engine: h.eng, Metrics: metrics,
					Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
				must(t, err)
				defer a.Close()
				return a.Once(ctx)
			}

			// pullship-agent once, the process, crashing mid-apply (a panic
			// with every goroutine's stack, credentials loaded): its crash
			// output is a channel a secret must not reach either.
			writeConfig(tc.table)
			bin, env := asAgent(envPanicAt+"="+panicAt, "GOTRACEBACK=all")
			crash := exec.Command(bin, "once", "--config", p)
			crash.Env = env
			crashOut, err := crash.CombinedOutput()
			if err == nil || !bytes.Contains(crashOut, []byte("goroutine ")) {
				t.Fatalf("pullship-agent once with a panic at %s: %v, want a crash with stacks\n%s", panicAt, err, crashOut)
			}

			// pullship-agent once, the process: finishes what the crash
			// left, applies and reports.
			bin, env = asAgent()
			cmd := exec.Command(bin, "once", "--config", p)
			cmd.Env = env
			var procOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &procOut, &procOut
			if err := cmd.Run(); err != nil {
				t.Fatalf("pullship-agent once over %s: %v\n%s", tc.url, err, procOut.String())
			}
			if h.conf() != "version = 1\n" {
				t.Fatalf("conf %q", h.conf())
			}
			status := bundle.StatusPrefix + h.node
			first := refOf(t, tc.bare, status)
			if first == "" {
				t.Fatalf("no status pushed to %s\n%s", tc.url, procOut.String())
			}
			if out, err := pass(writeConfig(tc.table)); err != nil || out != agent.Nothing {
				t.Fatalf("second pass over %s: %v %v\n%s", tc.url, out, err, logs.String())
			}
			r, err := bundler.Open(ctx, tc.url, filepath.Join(t.TempDir(), "status-cache"), opts)
			must(t, err)
			f, err := r.FleetStatus(ctx, h.env.Pinned, time.Now(), bundler.FleetOptions{})
			must(t, err)
			if len(f.Nodes) != 1 || f.Nodes[0].State != bundle.ReportOK || f.Nodes[0].Status.AppliedVersion != 1 {
				t.Fatalf("pullship status over %s: %+v", tc.url, f.Nodes)
			}

			// The server refused: the error names the remote and what the
			// server presented or said, and carries no secret.
			_, err = pass(writeConfig(tc.bad))
			if err == nil || !strings.Contains(err.Error(), repo.RedactURL(tc.url)) || !strings.Contains(err.Error(), tc.badSays) {
				t.Fatalf("pass with %q: %v, want an error naming %s and %q", tc.bad, err, repo.RedactURL(tc.url), tc.badSays)
			}

			// Every output channel, grepped for every secret.
			var page bytes.Buffer
			mfs, err := reg.Gather()
			must(t, err)
			for _, mf := range mfs {
				expfmt.MetricFamilyToText(&page, mf)
			}
			if !strings.Contains(page.String(), repo.RedactURL(tc.url)) {
				t.Errorf("metrics name no remote errors of %s:\n%s", repo.RedactURL(tc.url), page.String())
			}
			channels := map[string]string{
				"process output": procOut.String(),
				"crash output":   string(crashOut),
				"log":            logs.String(),
				"metrics":        page.String(),
				"status.toml":    gitOut(t, tc.bare, "show", status+":status.toml"),
			}
			filepath.Walk(state, func(path string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() {
					b, _ := os.ReadFile(path)
					channels[path] = string(b)
				}
				return nil
			})
			for ch, text := range channels {
				for what, secret := range secrets {
					if strings.Contains(text, secret) {
						t.Errorf("%s carries the %s", ch, what)
					}
				}
			}
		})
	}
}

// keyBody is the longest line of a PEM private key: what a leak of it
// would contain.
func keyBody(pem string) string {
	long := ""
	for _, l := range strings.Split(pem, "\n") {
		if len(l) > len(long) && !strings.HasPrefix(l, "-----") {
			long = l
		}
	}
	return long
}
