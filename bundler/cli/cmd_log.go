package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/schema"
)

func init() { commands = append(commands, newLogCmd) }

func newLogCmd(env Env) *cobra.Command {
	var (
		rf       repoFlags
		rootPath string
		limit    int
	)
	cmd := &cobra.Command{
		Use:   "log --repo REPO [--root ROOT]",
		Short: "Show the signed release history, one line per release",
		Long: `log prints the releases, newest first: version, commit, time, image, nodes and
the keys that signed. With --root the signatures are verified against that
root (a release that fails is marked FAIL); without it the key ids are the
ones the signature file claims.`,
		Example: `  pullship log --repo /srv/git/fleet.git --root root-1.toml
  pullship log --repo /srv/git/fleet.git -n 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var pinned *schema.Root
			if rootPath != "" {
				var err error
				if pinned, err = loadRoot(rootPath); err != nil {
					return err
				}
			}
			r, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			head, err := r.Sync(cmd.Context())
			if err != nil {
				return err
			}
			if head.Releases.IsZero() {
				fmt.Fprintln(env.Stdout, "no releases yet")
				return nil
			}
			commits, err := r.Cache.Log(head.Releases, limit)
			if err != nil {
				return err
			}
			bad := 0
			for _, c := range commits {
				line, ok := logLine(r, c.Hash, pinned)
				if !ok {
					bad++
				}
				fmt.Fprintln(env.Stdout, line)
			}
			if bad > 0 {
				return withCode(ExitVerify, fmt.Errorf("log: %d release(s) failed verification", bad))
			}
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&rootPath, "root", "", "verify signatures against this pinned root")
	cmd.Flags().IntVarP(&limit, "max-count", "n", 0, "show at most this many releases")
	return cmd
}

func logLine(r *bundler.Repository, commit plumbing.Hash, pinned *schema.Root) (string, bool) {
	id := shortID(commit.String())
	b, err := bundle.Read(r.Cache, commit)
	if err != nil {
		return fmt.Sprintf("FAIL %s: %v", id, err), false
	}
	rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
	if err != nil {
		return fmt.Sprintf("FAIL %s: %v", id, err), false
	}
	var signers []string
	status := "    "
	if pinned != nil {
		v, err := bundle.Verify(b, pinned, rel.Created)
		if err != nil {
			return fmt.Sprintf("FAIL %d %s: %v", rel.Version, id, err), false
		}
		signers = v.Signatures.Valid
		status = "ok  "
	} else if sigs, err := schema.ParseSignatures(schema.SigFileName(bundle.ManifestPath), b.Sig); err == nil {
		for _, s := range sigs.Signatures {
			signers = append(signers, s.KeyID)
		}
		status = "?   "
	}
	var imgs []string
	for _, im := range rel.Images {
		imgs = append(imgs, im.Name+"@"+shortID(strings.TrimPrefix(im.Digest, "sha256:")))
	}
	return fmt.Sprintf("%s%-4d %s %s %s nodes=%d signed-by=%s", status, rel.Version, id, rel.Created.Format(time.RFC3339),
		strings.Join(imgs, ","), len(rel.Nodes), strings.Join(shortIDs(signers), ",")), true
}
