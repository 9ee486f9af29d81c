package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
)

func init() { commands = append(commands, newVerifyCmd) }

func newVerifyCmd(env Env) *cobra.Command {
	var (
		rf         repoFlags
		rootPath   string
		version    int64
		all        bool
		skipChunks bool
	)
	cmd := &cobra.Command{
		Use:   "verify --repo REPO --root ROOT [--version N | --all]",
		Short: "Verify one release or the whole signed history",
		Long: `verify checks releases the way an agent does, against the trust root you pin:
the root chain, the signature threshold, the hash chain and consecutive
versions, every node file and image index against the manifest, and every
chunk of every image (fetched for the purpose). It prints one line per release
and exits 3 when anything fails. With --all it also remembers the newest
release in its cache, so a later run notices a history rewritten by force-push.`,
		Example: `  pullship verify --repo /srv/git/fleet.git --root root-1.toml
  pullship verify --repo http://git.example.com/fleet.git --root root-1.toml --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pinned, err := loadRoot(rootPath)
			if err != nil {
				return err
			}
			r, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			err = r.VerifyHistory(cmd.Context(), bundler.VerifyOptions{Pinned: pinned, Version: version, All: all, SkipChunks: skipChunks},
				func(l bundler.VerifyLine) {
					if l.Err != nil {
						v := "release ?"
						if l.Version != 0 {
							v = fmt.Sprintf("release %d", l.Version)
						}
						fmt.Fprintf(env.Stdout, "FAIL %s %s: %v\n", v, shortID(l.Commit.String()), l.Err)
						return
					}
					note := ""
					if l.Note != "" {
						note = " (" + l.Note + ")"
					}
					fmt.Fprintf(env.Stdout, "ok   release %d %s %s signed by %s%s\n", l.Version, shortID(l.Commit.String()),
						l.Created.Format(time.RFC3339), strings.Join(shortIDs(l.Signers), ", "), note)
				})
			if err != nil {
				return withCode(ExitVerify, fmt.Errorf("verify: %w", err))
			}
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&rootPath, "root", "", "the trust root you pin (root-N.toml)")
	cmd.Flags().Int64Var(&version, "version", 0, "verify this release (default: the newest)")
	cmd.Flags().BoolVar(&all, "all", false, "verify every release, oldest first")
	cmd.Flags().BoolVar(&skipChunks, "skip-chunks", false, "do not fetch and check image chunks")
	cmd.MarkFlagsMutuallyExclusive("version", "all")
	return cmd
}
