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

func newVerifyFileCmd(env Env) *cobra.Command {
	var o verifyFileOptions
	cmd := &cobra.Command{
		Use:   "verify-file --root ROOT FILE",
		Short: "Check FILE.sig meets the threshold of a trust root",
		Long: `verify-file checks the signatures in FILE.sig (or --sig) over the exact bytes of
FILE against the keys and threshold of the trust root ROOT (a root-N.toml you
trust), and that ROOT has not expired. Each key counts once. It prints the keys
that verified; on failure it says why each signature did not count and exits 3.

With --chain, the newer roots given (root-N.toml files, each with its .sig) are
first verified from ROOT onwards: root-(N+1) must be signed by a threshold of
root-N's keys and of its own, versions must be consecutive, and the newest root
must not have expired; FILE is then checked against the newest root.`,
		Example: `  pullship verify-file --root root/root-1.toml release.toml
  pullship verify-file --root root-2.toml --sig /tmp/release.sig release.toml
  pullship verify-file --root pinned/root-1.toml --chain root/root-2.toml --chain root/root-3.toml release.toml`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { o.file = args[0]; return runVerifyFile(env, o) },
	}
	cmd.Flags().StringVar(&o.rootPath, "root", "", "trust root file (root-N.toml)")
	cmd.Flags().StringVar(&o.sigPath, "sig", "", "signature file (default FILE.sig)")
	cmd.Flags().StringArrayVar(&o.chain, "chain", nil, "newer root file (root-N.toml, with root-N.toml.sig) to walk to from --root; repeat")
	return cmd
}

type verifyFileOptions struct {
	file, rootPath, sigPath string
	chain                   []string
}

func runVerifyFile(env Env, o verifyFileOptions) error {
	file := o.file
	if o.rootPath == "" {
		return cliutil.Usage(errors.New("verify-file: --root ROOT is required"))
	}
	if o.sigPath == "" {
		o.sigPath = schema.SigFileName(file)
	}
	rootData, err := os.ReadFile(o.rootPath)
	if err != nil {
		return fmt.Errorf("verify-file: %w", err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("verify-file: %w", err)
	}
	sig, err := os.ReadFile(o.sigPath)
	if err != nil {
		return schema.Refused(fmt.Errorf("verify %s: no signatures: %w", file, err))
	}
	root, err := schema.ParseRoot(o.rootPath, rootData)
	if err != nil {
		return schema.Refused(fmt.Errorf("verify %s: trust root: %w", file, err))
	}
	now := time.Now()
	if len(o.chain) > 0 {
		var files []schema.SignedFile
		for _, p := range o.chain {
			d, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("verify-file: %w", err)
			}
			s, err := os.ReadFile(schema.SigFileName(p))
			if err != nil {
				return schema.Refused(fmt.Errorf("verify %s: no signatures: %w", p, err))
			}
			files = append(files, schema.SignedFile{Name: filepath.Base(p), Data: d, Sig: s})
		}
		files, err = schema.RootChainAfter(files, root.Version)
		if err != nil {
			return cliutil.Usage(fmt.Errorf("verify-file: %w", err))
		}
		if root, err = schema.VerifyRootChain(root, files, now); err != nil {
			return schema.Refused(fmt.Errorf("verify %s: trust root: %w", file, err))
		}
	}
	res, err := schema.VerifySigned(root, filepath.Base(file), data, sig, now)
	if err != nil {
		return schema.Refused(err)
	}
	for _, id := range res.Valid {
		fmt.Fprintf(env.Stdout, "key %s: good signature\n", id)
	}
	fmt.Fprintf(env.Stdout, "%s: verified, %s (root %d)\n", file, res.Summary(), root.Version)
	return nil
}
