package agent_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/secrets"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/image"
)

// TestNodeSecret: a template value set with pullship secret set reaches the
// node's file in plaintext, while git holds only ciphertext; a second pass
// sees nothing drifted; the status report carries no plaintext digest.
func TestNodeSecret(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	ops := filepath.Join(h.env.Dir, "ops.age")
	opsRcpt, err := secrets.GenerateIdentity(ops)
	must(t, err)
	// The agent's identity sits where agent.toml's default puts it.
	nodeRcpt, err := secrets.GenerateIdentity(filepath.Join(h.env.Dir, "node.age"))
	must(t, err)

	h.release(h.image("a"), "placeholder\n", `["/pingsrv", "ping"]`)
	fleet := h.fleet
	data, err := os.ReadFile(fleet)
	must(t, err)
	src := strings.Replace(string(data), "[[node]]\n", "[secrets]\nrecipients = [\""+opsRcpt+"\"]\n\n[[node]]\nage_recipient = \""+nodeRcpt+"\"\n", 1)
	must(t, os.WriteFile(fleet, []byte(src), 0o644))
	must(t, os.WriteFile(filepath.Join(filepath.Dir(fleet), "conf.tmpl"), []byte("cookie = {{secret \"cookie\"}}\n"), 0o644))
	must(t, bundler.SetSecret(fleet, h.node, "cookie", []byte("s3cr3t-cookie")))
	if _, err := h.env.Release.Release(ctx, bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(h.image("a")),
		Signers: []signature.Signer{h.env.Key.Signer}, SecretsIdentity: ops}); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) string {
		out, err := execGit(h.env.Repo, args...)
		must(t, err)
		return out
	}
	if strings.Contains(git("log", "-p", "--all"), "s3cr3t-cookie") {
		t.Fatal("the plaintext secret is in git")
	}

	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("once: %v %v", out, err)
	}
	if got := h.conf(); got != "cookie = s3cr3t-cookie\n" {
		t.Fatalf("node file %q", got)
	}
	if out, err := h.once(); err != nil || out != agent.Nothing {
		t.Fatalf("second once (an encrypted file must not look drifted): %v %v", out, err)
	}
	if strings.Contains(h.log.String(), "s3cr3t") {
		t.Fatal("the plaintext secret is in the agent's log")
	}
	if strings.Contains(git("log", "-p", "refs/heads/status/"+h.node), "s3cr3t") {
		t.Fatal("the plaintext secret is in the status branch")
	}
}

func execGit(dir string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	return string(out), err
}
