package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pullship/pullship/schema"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newVerifyFileCmd) }

func newVerifyFileCmd(env Env) *cobra.Command {
	var rootPath, sigPath string
	var chain []string
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
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			if rootPath == "" {
				return withCode(ExitUsage, errors.New("verify-file: --root ROOT is required"))
			}
			if sigPath == "" {
				sigPath = schema.SigFileName(file)
			}
			rootData, err := os.ReadFile(rootPath)
			if err != nil {
				return fmt.Errorf("verify-file: %w", err)
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("verify-file: %w", err)
			}
			sig, err := os.ReadFile(sigPath)
			if err != nil {
				return withCode(ExitVerify, fmt.Errorf("verify %s: no signatures: %w", file, err))
			}
			root, err := schema.ParseRoot(rootPath, rootData)
			if err != nil {
				return withCode(ExitVerify, fmt.Errorf("verify %s: trust root: %w", file, err))
			}
			now := time.Now()
			if len(chain) > 0 {
				var files []schema.SignedFile
				for _, p := range chain {
					d, err := os.ReadFile(p)
					if err != nil {
						return fmt.Errorf("verify-file: %w", err)
					}
					s, err := os.ReadFile(schema.SigFileName(p))
					if err != nil {
						return withCode(ExitVerify, fmt.Errorf("verify %s: no signatures: %w", p, err))
					}
					files = append(files, schema.SignedFile{Name: filepath.Base(p), Data: d, Sig: s})
				}
				files, err = schema.RootChainAfter(files, root.Version)
				if err != nil {
					return withCode(ExitUsage, fmt.Errorf("verify-file: %w", err))
				}
				if root, err = schema.VerifyRootChain(root, files, now); err != nil {
					return withCode(ExitVerify, fmt.Errorf("verify %s: trust root: %w", file, err))
				}
			}
			res, err := schema.VerifySigned(root, filepath.Base(file), data, sig, now)
			if err != nil {
				return withCode(ExitVerify, err)
			}
			for _, id := range res.Valid {
				fmt.Fprintf(env.Stdout, "key %s: good signature\n", id)
			}
			fmt.Fprintf(env.Stdout, "%s: verified, %s (root %d)\n", file, res.Summary(), root.Version)
			return nil
		},
	}
	cmd.Flags().StringVar(&rootPath, "root", "", "trust root file (root-N.toml)")
	cmd.Flags().StringVar(&sigPath, "sig", "", "signature file (default FILE.sig)")
	cmd.Flags().StringArrayVar(&chain, "chain", nil, "newer root file (root-N.toml, with root-N.toml.sig) to walk to from --root; repeat")
	return cmd
}
