package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pullship/pullship/bundler/shared/cliutil"
	"github.com/pullship/pullship/schema"
	"github.com/spf13/cobra"
)

func newRootCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "root",
		Short: "Create and rotate the trust root (root-N.toml)",
		Long: `A trust root, root-N.toml, lists the public keys allowed to sign releases and
how many of them must sign (the threshold). Agents pin one root out of band.
root-(N+1).toml is trusted only when signed by a threshold of root-N's keys and
a threshold of its own keys. Every root file has a detached signature file next
to it (root-N.toml.sig).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cliutil.Usage(errors.New("root: say init or rotate (see pullship root --help)"))
		},
	}
	cmd.AddCommand(newRootInitCmd(env), newRootRotateCmd(env))
	return cmd
}

// rootFlags are the flags init and rotate share.
type rootFlags struct {
	keys, signers []string
	threshold     int
	out, expires  string
	passwordFile  string
}

func (rf *rootFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&rf.keys, "key", nil, "public key file (PEM) of the new root; repeat for each key")
	f.IntVar(&rf.threshold, "threshold", 0, "how many distinct keys must sign (1..number of keys)")
	f.StringArrayVar(&rf.signers, "sign", nil, "private key file to sign with; repeat for each signer")
	f.StringVar(&rf.expires, "expires", "365d", "expiry: days (365d), a duration (48h) from now, or an RFC 3339 time")
	f.StringVar(&rf.passwordFile, "password-file", "", "read key passwords from the first line of this file")
}

// build makes the new root of the given version from the flags, and loads
// the signing keys.
func (rf *rootFlags) build(env Env, version int64, now time.Time) (*schema.Root, []*signingKey, error) {
	if len(rf.keys) == 0 {
		return nil, nil, cliutil.Usage(errors.New("at least one --key PUB is required"))
	}
	if len(rf.signers) == 0 {
		return nil, nil, cliutil.Usage(errors.New("at least one --sign KEY is required"))
	}
	if rf.threshold < 1 || rf.threshold > len(rf.keys) {
		return nil, nil, cliutil.Usage(fmt.Errorf("--threshold %d: want 1 to %d (the number of --key)", rf.threshold, len(rf.keys)))
	}
	expires, err := parseExpires(rf.expires, now)
	if err != nil {
		return nil, nil, cliutil.Usage(err)
	}
	r := &schema.Root{Version: version, Expires: expires, Threshold: rf.threshold}
	for _, path := range rf.keys {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		k, err := schema.NewRootKey(data)
		if err != nil {
			return nil, nil, cliutil.Usage(fmt.Errorf("--key %s: %w", path, err))
		}
		r.Keys = append(r.Keys, k)
	}
	if err := r.Validate(); err != nil {
		return nil, nil, cliutil.Usage(err)
	}
	pw := passwords{env: env, file: rf.passwordFile}
	var signers []*signingKey
	for _, path := range rf.signers {
		k, err := loadSigningKey(path, pw)
		if err != nil {
			return nil, nil, err
		}
		signers = append(signers, k)
	}
	return r, signers, nil
}

// writeRoot writes a new root file and its .sig; neither may exist yet.
func writeRoot(out string, data []byte, sigs *schema.SignatureFile) error {
	for _, p := range []string{out, schema.SigFileName(out)} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists; remove it or choose another --out", p)
		}
	}
	if err := writeNew(out, data, 0o644); err != nil {
		return err
	}
	if err := writeNew(schema.SigFileName(out), sigs.Encode(), 0o644); err != nil {
		os.Remove(out)
		return err
	}
	return nil
}

func printSigners(env Env, signers []*signingKey) {
	for _, k := range signers {
		fmt.Fprintf(env.Stdout, "signed by %s (%s)\n", k.id, k.path)
	}
}

func newRootInitCmd(env Env) *cobra.Command {
	var rf rootFlags
	cmd := &cobra.Command{
		Use:   "init --key PUB... --threshold K --sign KEY... [--out root-1.toml]",
		Short: "Create the first trust root, root-1.toml, and its signatures",
		Long: `root init writes root-1.toml listing the --key public keys and the threshold,
and root-1.toml.sig signed by every --sign private key. It refuses (exit 3) when
the signatures do not meet the threshold, so that every root on disk verifies.`,
		Example: `  pullship root init --key alice.pub --key bob.pub --key carol.pub --threshold 2 \
      --sign alice.key --sign bob.key --out root/root-1.toml
  pullship root init --key ci.pub --threshold 1 --sign ci.key --expires 2027-12-31T00:00:00Z`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRootInit(env, rf) },
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&rf.out, "out", "", "root file to write (default root-1.toml)")
	return cmd
}

func runRootInit(env Env, rf rootFlags) error {
	if rf.out == "" {
		rf.out = schema.RootFileName(1)
	}
	r, signers, err := rf.build(env, 1, time.Now())
	if err != nil {
		return fmt.Errorf("root init: %w", err)
	}
	for _, k := range signers {
		if _, ok := r.Key(k.id); !ok {
			return cliutil.Usage(fmt.Errorf("root init: --sign %s: key %s is not one of the root's --key", k.path, k.id))
		}
	}
	data, err := r.Encode()
	if err != nil {
		return fmt.Errorf("root init: %w", err)
	}
	sigs, err := signAll(signers, data)
	if err != nil {
		return fmt.Errorf("root init: %w", err)
	}
	if _, err := schema.VerifyThreshold(r, data, sigs); err != nil {
		return schema.Refused(fmt.Errorf("root init: %s not written: %w (add --sign keys)", rf.out, err))
	}
	if err := writeRoot(rf.out, data, sigs); err != nil {
		return fmt.Errorf("root init: %w", err)
	}
	printSigners(env, signers)
	fmt.Fprintf(env.Stdout, "wrote %s and %s: %d keys, threshold %d, expires %s\n",
		rf.out, schema.SigFileName(rf.out), len(r.Keys), r.Threshold, r.Expires.Format(time.RFC3339))
	return nil
}

func newRootRotateCmd(env Env) *cobra.Command {
	var rf rootFlags
	var prevPath string
	cmd := &cobra.Command{
		Use:   "rotate --root root-N.toml --key PUB... --threshold K --sign KEY... [--out root-(N+1).toml]",
		Short: "Write the next trust root, signed by the old and the new keys",
		Long: `root rotate writes root-(N+1).toml with the --key public keys and threshold, and
its .sig signed by every --sign key. Agents accept the new root only when its
signatures meet root-N's threshold with root-N's keys AND its own threshold with
its own keys, so --sign must cover both; rotate checks that before writing and
refuses (exit 3) otherwise. --out defaults to root-(N+1).toml next to --root.`,
		Example: `  # replace carol's key by dave's, keeping 2 of 3
  pullship root rotate --root root/root-1.toml \
      --key alice.pub --key bob.pub --key dave.pub --threshold 2 \
      --sign alice.key --sign bob.key`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRootRotate(env, rf, prevPath) },
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&prevPath, "root", "", "the current root, root-N.toml")
	cmd.Flags().StringVar(&rf.out, "out", "", "root file to write (default root-(N+1).toml next to --root)")
	return cmd
}

func runRootRotate(env Env, rf rootFlags, prevPath string) error {
	if prevPath == "" {
		return cliutil.Usage(errors.New("root rotate: --root root-N.toml is required"))
	}
	prevData, err := os.ReadFile(prevPath)
	if err != nil {
		return fmt.Errorf("root rotate: %w", err)
	}
	prev, err := schema.ParseRoot(prevPath, prevData)
	if err != nil {
		return cliutil.Usage(fmt.Errorf("root rotate: %w", err))
	}
	next, signers, err := rf.build(env, prev.Version+1, time.Now())
	if err != nil {
		return fmt.Errorf("root rotate: %w", err)
	}
	for _, k := range signers {
		_, inPrev := prev.Key(k.id)
		_, inNext := next.Key(k.id)
		if !inPrev && !inNext {
			return cliutil.Usage(fmt.Errorf("root rotate: --sign %s: key %s is in neither root %d nor root %d", k.path, k.id, prev.Version, next.Version))
		}
	}
	if rf.out == "" {
		rf.out = filepath.Join(filepath.Dir(prevPath), schema.RootFileName(next.Version))
	}
	data, err := next.Encode()
	if err != nil {
		return fmt.Errorf("root rotate: %w", err)
	}
	sigs, err := signAll(signers, data)
	if err != nil {
		return fmt.Errorf("root rotate: %w", err)
	}
	if _, err := schema.VerifyRootUpdate(prev, schema.SignedFile{Name: filepath.Base(rf.out), Data: data, Sig: sigs.Encode()}); err != nil {
		return schema.Refused(fmt.Errorf("root rotate: %s not written: %w", rf.out, err))
	}
	if err := writeRoot(rf.out, data, sigs); err != nil {
		return fmt.Errorf("root rotate: %w", err)
	}
	printSigners(env, signers)
	fmt.Fprintf(env.Stdout, "wrote %s and %s: %d keys, threshold %d, expires %s\n",
		rf.out, schema.SigFileName(rf.out), len(next.Keys), next.Threshold, next.Expires.Format(time.RFC3339))
	return nil
}

// parseExpires reads --expires: a duration from now ("365d", "36h") or an
// RFC 3339 time. The result is UTC, whole seconds, and in the future.
func parseExpires(s string, now time.Time) (time.Time, error) {
	var t time.Time
	if d, err := cliutil.ParseDuration(s); err == nil {
		t = now.Add(d)
	} else if at, err := time.Parse(time.RFC3339, s); err == nil {
		t = at
	} else {
		return time.Time{}, fmt.Errorf("--expires %q: want a number of days like 365d, a duration like 48h, or an RFC 3339 time", s)
	}
	t = t.UTC().Truncate(time.Second)
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("--expires %q: %s is not in the future", s, t.Format(time.RFC3339))
	}
	return t, nil
}
