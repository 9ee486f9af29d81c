package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/cliutil"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

type mirrorOptions struct {
	src, dst  string
	cache     string
	root      string
	images    int
	allImages bool
	// Each side its own credentials: SRC's never go to DST's server.
	srcCreds, dstCreds credFlags
	// Status repositories of their own, with their credentials.
	statusSrc, statusDst           string
	statusSrcCreds, statusDstCreds credFlags
}

func newMirrorCmd(env Env) *cobra.Command {
	var o mirrorOptions
	cmd := &cobra.Command{
		Use:   "mirror SRC DST",
		Short: "Copy a release repository to a relay or a directory, and status back",
		Long: `mirror copies the release branch, the trust root ref and the image tags the
newest releases need (--images N, or every tag with --all-images) from SRC to
DST, and carries status branches both ways: the side that is behind is
fast-forwarded, and when an agent's branch diverged the newer report (higher
sequence, then later time) wins. SRC and DST are git URLs or directories; a
directory that does not exist (or is empty) becomes a bare repository, e.g. on
removable media for air-gapped hosts.

A second run copies only what is new. Releases are copied, never re-signed;
DST's release branch is never moved backwards: when DST is ahead of SRC or
diverged from it, mirror refuses and changes nothing. With --root the newest
release and every chunk of its images are verified first (exit 3 when they do
not verify; exit 1 when a remote fails, naming it). The credential flags
(--ssh-key, --git-password-file, ...) are SRC's; DST has its own, prefixed
--dst-: neither side's credentials are sent to the other's server.

When the agents push their status to repositories of their own (status_remote
in agent.toml), --status-src and --status-dst name them: status branches are
then carried between those two, by the same rules, and not between SRC and
DST. Their credentials are --status-src-* and --status-dst-*. See
docs/mirror.md.`,
		Example: `  pullship mirror https://git.example.com/fleet.git git://relay.eu/fleet.git
  pullship mirror /srv/git/fleet.git /media/usb/fleet.git --images 1
  pullship mirror /media/usb/fleet.git /srv/git/fleet.git   # status back home
  pullship mirror ssh://git@git.example.com/ops/fleet.git https://relay.example.com/fleet.git \
      --ssh-key ~/.ssh/fleet_deploy --dst-git-username pullship \
      --dst-git-password-file /run/secrets/relay-token --dst-ca-file relay-ca.pem
  pullship mirror /media/usb/fleet.git /srv/git/fleet.git \
      --status-src /media/usb/fleet-status.git --status-dst /srv/git/fleet-status.git`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return cliutil.Usage(fmt.Errorf("mirror: want SRC and DST, got %d arguments", len(args)))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.src, o.dst = args[0], args[1]
			return runMirror(cmd.Context(), env, o)
		},
	}
	cmd.Flags().StringVar(&o.cache, "cache", "", "local object cache (default: under the user cache directory, per SRC and DST)")
	cmd.Flags().StringVar(&o.root, "root", "", "verify the newest release against this pinned root before copying")
	cmd.Flags().IntVar(&o.images, "images", bundler.DefaultMirrorImages, "copy the image tags of the newest N releases")
	cmd.Flags().BoolVar(&o.allImages, "all-images", false, "copy every image tag the source has")
	o.srcCreds.register(cmd, "", "SRC")
	o.dstCreds.register(cmd, "dst-", "DST")
	cmd.Flags().StringVar(&o.statusSrc, "status-src", "", "SRC's status repository: carry status branches between it and --status-dst instead of between SRC and DST")
	cmd.Flags().StringVar(&o.statusDst, "status-dst", "", "DST's status repository (with --status-src)")
	o.statusSrcCreds.register(cmd, "status-src-", "the status source")
	o.statusDstCreds.register(cmd, "status-dst-", "the status destination")
	return cmd
}

func runMirror(ctx context.Context, env Env, o mirrorOptions) error {
	src, dst, cache := o.src, o.dst, o.cache
	if o.images < 1 {
		return cliutil.Usage(fmt.Errorf("mirror: --images %d: at least 1", o.images))
	}
	var pinned *schema.Root
	if o.root != "" {
		var err error
		if pinned, err = loadRoot(o.root); err != nil {
			return err
		}
	}
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("mirror: %w (set --cache)", err)
		}
		sum := sha256.Sum256([]byte("mirror\x00" + absURL(src) + "\x00" + absURL(dst)))
		cache = filepath.Join(base, "pullship", "mirror-"+hex.EncodeToString(sum[:8]))
	}
	srcOpts, err := o.srcCreds.options(src)
	if err != nil {
		return fmt.Errorf("mirror: source: %w", err)
	}
	dstOpts, err := o.dstCreds.options(dst)
	if err != nil {
		return fmt.Errorf("mirror: destination: %w", err)
	}
	r, err := bundler.Open(ctx, src, cache, srcOpts)
	if err != nil {
		return fmt.Errorf("mirror: source: %w", err)
	}
	to, err := bundler.OpenMirrorTarget(ctx, dst, dstOpts)
	if err != nil {
		return fmt.Errorf("mirror: destination: %w", err)
	}
	mo := bundler.MirrorOptions{Images: o.images, AllImages: o.allImages, Pinned: pinned}
	if (o.statusSrc == "") != (o.statusDst == "") {
		return cliutil.Usage(fmt.Errorf("mirror: --status-src and --status-dst go together"))
	}
	if o.statusSrc != "" {
		if mo.StatusSrc, err = openStatusSide(ctx, o.statusSrc, &o.statusSrcCreds, false); err != nil {
			return fmt.Errorf("mirror: status source: %w", err)
		}
		if mo.StatusDst, err = openStatusSide(ctx, o.statusDst, &o.statusDstCreds, true); err != nil {
			return fmt.Errorf("mirror: status destination: %w", err)
		}
	}
	res, err := r.Mirror(ctx, to, mo)
	if err != nil {
		return err
	}
	for _, n := range res.Notes {
		fmt.Fprintf(env.Stderr, "note: %s\n", n)
	}
	if res.Nothing() {
		fmt.Fprintf(env.Stdout, "nothing new: %s and %s agree\n", repo.RedactURL(src), repo.RedactURL(dst))
		return nil
	}
	toDst, toSrc := "→ dst", "← src"
	if o.statusSrc != "" {
		toSrc = "← status src"
	}
	for _, c := range res.ToDst {
		side := toDst
		if o.statusSrc != "" && strings.HasPrefix(c.Ref, bundle.StatusPrefix) {
			side = "→ status dst"
		}
		fmt.Fprintf(env.Stdout, "%s %s\n", side, changeLine(c))
	}
	for _, c := range res.ToSrc {
		fmt.Fprintf(env.Stdout, "%s %s\n", toSrc, changeLine(c))
	}
	fmt.Fprintf(env.Stdout, "copied to %s: %d objects, %d bytes; to %s: %d objects, %d bytes\n",
		repo.RedactURL(dst), res.DstObjects, res.DstBytes, repo.RedactURL(src), res.SrcObjects, res.SrcBytes)
	return nil
}

// openStatusSide opens a status repository a mirror carries status
// branches to and from. On the destination's side (create) a missing or
// empty directory becomes a bare repository, as a mirror destination does;
// the source's must exist, so that a mistyped path is an error rather than
// an empty repository nothing is carried from.
func openStatusSide(ctx context.Context, url string, creds *credFlags, create bool) (*repo.Remote, error) {
	url = absURL(url)
	opts, err := creds.options(url)
	if err != nil {
		return nil, err
	}
	if !create {
		return repo.Open(ctx, url, opts)
	}
	return bundler.OpenMirrorTarget(ctx, url, opts)
}

func changeLine(c bundler.RefChange) string {
	switch {
	case c.Old.IsZero():
		return fmt.Sprintf("%s created at %s", c.Ref, shortID(c.New.String()))
	case c.Forced:
		return fmt.Sprintf("%s %s → %s (diverged: the newer report wins)", c.Ref, shortID(c.Old.String()), shortID(c.New.String()))
	default:
		return fmt.Sprintf("%s %s → %s", c.Ref, shortID(c.Old.String()), shortID(c.New.String()))
	}
}

// absURL makes a directory argument absolute, so the default cache does not
// depend on the working directory.
func absURL(u string) string {
	if strings.Contains(u, "://") {
		return u
	}
	if abs, err := filepath.Abs(u); err == nil {
		return abs
	}
	return u
}
