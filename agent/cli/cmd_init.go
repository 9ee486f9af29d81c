package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pullship/pullship/bundler/shared/atomicfile"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/secrets"
	"github.com/pullship/pullship/bundler/shared/cliutil"
	"github.com/pullship/pullship/schema"
)

type initOptions struct{ config string }

func newInitCmd(a *app) *command {
	var o initOptions
	c := newCommand("init", "Create each node's status-signing key",
		`init creates, for every [[node]] of agent.toml that has none yet, the key its
status reports are signed with: an ECDSA P-256 private key at the node's key
path (unencrypted PKCS#8, mode 0600, because the agent runs unattended) and
its public key next to it (key path + ".pub"). An existing key is kept.

Put each public key in the fleet (fleet.toml: the node's status_key) and cut a
release: readers verify a node's reports against the key the signed release
lists.`,
		`  pullship-agent init --config /etc/pullship/agent.toml`)
	configFlag(c, &o.config)
	c.run = func(ctx context.Context, _ []string) error { return a.runInit(o) }
	return c
}

func (a *app) runInit(o initOptions) error {
	cfg, err := config.Load(o.config)
	if err != nil {
		return cliutil.Usage(err)
	}
	out := a.env.Stdout
	for _, n := range cfg.Nodes {
		pub, id, created, err := ensureStatusKey(n.Key)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		what := "kept existing"
		if created {
			what = "created"
		}
		fmt.Fprintf(out, "node %s: %s status key %s\n  key id:     %s\n  public key: %s\n", n.Name, what, n.Key, id, pub)
		rcpt, err := secrets.GenerateIdentity(n.AgeIdentity)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		fmt.Fprintf(out, "  secrets identity: %s\n", n.AgeIdentity)
		fmt.Fprintf(out, "  fleet.toml: [[node]] name = %q ... status_key = %q (copy the .pub into the fleet directory)\n", n.Name, filepath.Base(pub))
		fmt.Fprintf(out, "              age_recipient = %q (node secrets are encrypted to it)\n", rcpt)
	}
	return nil
}

// ensureStatusKey creates the key at path unless it exists, and writes
// path.pub when it is missing. It returns the public key path and key id.
func ensureStatusKey(path string) (pubPath, id string, created bool, err error) {
	pubPath = path + ".pub"
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		signer, _, err := schema.LoadPrivateKey(path, data, nil)
		if errors.Is(err, schema.ErrNeedPassword) {
			return "", "", false, fmt.Errorf("status key %s is encrypted: the agent signs unattended and needs an unencrypted key (remove it to have init create one)", path)
		}
		if err != nil {
			return "", "", false, err
		}
		pub, err := signer.PublicKey()
		if err != nil {
			return "", "", false, fmt.Errorf("status key %s: %w", path, err)
		}
		if id, err = schema.KeyID(pub); err != nil {
			return "", "", false, fmt.Errorf("status key %s: %w", path, err)
		}
		if _, err := os.Stat(pubPath); errors.Is(err, fs.ErrNotExist) {
			pem, err := cryptoutils.MarshalPublicKeyToPEM(pub)
			if err != nil {
				return "", "", false, fmt.Errorf("status key %s: %w", path, err)
			}
			if err := writeNew(pubPath, pem, 0o644); err != nil {
				return "", "", false, err
			}
		}
		return pubPath, id, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", "", false, fmt.Errorf("read status key: %w", err)
	}
	kp, err := schema.GenerateKey(schema.AlgECDSAP256SHA256, nil)
	if err != nil {
		return "", "", false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", "", false, fmt.Errorf("create status key: %w", err)
	}
	if err := writeNew(path, kp.PrivatePEM, 0o600); err != nil {
		return "", "", false, err
	}
	// A stale .pub of an older key would mislead: replace it.
	if err := atomicfile.WriteFile(pubPath, bytes.NewReader(kp.PublicPEM), 0o644); err != nil {
		return "", "", false, fmt.Errorf("write public key: %w", err)
	}
	return pubPath, kp.KeyID, true, nil
}

// writeNew creates path (failing if it exists) with data, durably; no
// reader ever sees it partly written.
func writeNew(path string, data []byte, mode os.FileMode) error {
	return atomicfile.WriteNew(path, data, mode)
}
