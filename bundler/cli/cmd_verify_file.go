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
	cmd := &cobra.Command{
		Use:   "verify-file --root ROOT FILE",
		Short: "Check FILE.sig meets the threshold of a trust root",
		Long: `verify-file checks the signatures in FILE.sig (or --sig) over the exact bytes of
FILE against the keys and threshold of the trust root ROOT (a root-N.toml you
trust), and that ROOT has not expired. Each key counts once. It prints the keys
that verified; on failure it says why each signature did not count and exits 3.`,
		Example: `  pullship verify-file --root root/root-1.toml release.toml
  pullship verify-file --root root-2.toml --sig /tmp/release.sig release.toml`,
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
			res, err := schema.VerifySigned(root, filepath.Base(file), data, sig, time.Now())
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
	return cmd
}
