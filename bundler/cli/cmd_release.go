package cli

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pullship/pullship/bundler/render"
	"github.com/pullship/pullship/bundler/shared/cliutil"

	"github.com/docker/docker/client"
	"github.com/schollz/progressbar/v3"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/image"
)

type releaseOptions struct {
	repoFlags
	fleet        string
	images       []string
	keys, roots  []string
	now          []string
	passwordFile string
	expires      time.Duration
	sourceCommit string
	allowDirty   bool
	secretsID    string
	resetVersion bool
	quiet        bool
}

func newReleaseCmd(env Env) *cobra.Command {
	var o releaseOptions
	cmd := &cobra.Command{
		Use:   "release --repo REPO --fleet fleet.toml --image SRC --key KEY...",
		Short: "Pack an image and every node's config into a signed release and push it",
		Long: `release renders every node's files from the fleet's templates, splits the image
into content-defined chunks (sending only those the repository lacks), writes
release.toml with the next version, signs it with every --key and pushes the
release commit and the image tag in one compare-and-swap push. Nothing is
pushed when the signatures would not meet the trust root's threshold, when
nothing changed since the current release, or when any input is bad.

SRC is a docker save tarball, an OCI image layout (directory or tar), or
docker://NAME to read the image from the local Docker engine. A fleet of
several services ([[service]]) takes one --image SERVICE=SRC per service; a
service without one, and a fleet without --image, read each service's image
from the local engine by the reference the fleet names.

KEY is a private key file (encrypted keys read their password from
--password-file, $PULLSHIP_PASSWORD or the terminal) or a KMS key URI of a
sigstore KMS provider compiled into this binary.`,
		Example: `  pullship release --repo /srv/git/fleet.git --fleet fleet.toml --image vernemq.tar --key release.key
  PULLSHIP_PASSWORD=... pullship release --repo http://git.example.com/fleet.git \
      --fleet fleet.toml --image docker://airdroid/vernemq:1.6.1 --key alice.key --key bob.key`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRelease(cmd.Context(), env, o) },
	}
	o.repoFlags.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.fleet, "fleet", "", "fleet.toml (its templates are read relative to it)")
	f.StringArrayVar(&o.images, "image", nil, "image: a docker save tarball, an OCI layout, or docker://NAME; SERVICE=SRC for one of several services (default: docker://<the service's image>)")
	f.StringArrayVar(&o.keys, "key", nil, "signing key file or KMS URI (repeat for a threshold)")
	f.StringArrayVar(&o.roots, "publish-root", nil, "a newer root-N.toml (with its .sig) to publish with this release")
	f.StringArrayVar(&o.now, "now", nil, "node exempt from wave gating (emergency override; repeatable)")
	f.StringVar(&o.passwordFile, "password-file", "", "read key passwords from the first line of this file")
	f.Var(cliutil.DurationFlag(&o.expires, 0), "expires", "release lifetime: days (14d) or a duration (36h) (default: the fleet's, 14 days)")
	f.StringVar(&o.sourceCommit, "source-commit", "", "fleet repository commit to record when the fleet is not a git work tree")
	f.BoolVar(&o.allowDirty, "allow-dirty", false, "release from a fleet work tree with uncommitted changes")
	f.StringVar(&o.secretsID, "secrets-identity", "", "age identity file that decrypts the fleet's node secrets (see docs/secrets.md)")
	f.BoolVar(&o.resetVersion, "reset-version", false, "number this release 1 again (with --publish-root: recovery from a runaway version)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "no progress output")
	return cmd
}

func runRelease(ctx context.Context, env Env, o releaseOptions) error {
	if o.fleet == "" || len(o.keys) == 0 {
		return cliutil.Usage(errors.New("release: --fleet and at least one --key are required"))
	}
	if o.expires < 0 {
		return cliutil.Usage(fmt.Errorf("release: --expires %s: a lifetime is positive", cliutil.FormatDuration(o.expires)))
	}
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	signers, err := loadSigners(ctx, o.keys, passwords{env: env, file: o.passwordFile})
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	data, err := os.ReadFile(o.fleet)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	f, err := render.ParseFleet(o.fleet, data)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	// Each --image is SERVICE=SRC, or SRC alone for the image every
	// service names; a service without one is read from the local engine
	// by the reference the fleet names.
	refs := map[string]string{}
	single := ""
	for _, ref := range o.images {
		if name, src, ok := strings.Cut(ref, "="); ok && f.Multi {
			if _, known := f.ServiceByName(name); known {
				refs[name] = src
				continue
			}
		}
		if single != "" {
			return cliutil.Usage(fmt.Errorf("release: --image %s: a second image without a service name (write --image SERVICE=SRC)", ref))
		}
		single = ref
	}
	srcs := map[string]image.Source{}
	bySingle := map[string]bool{} // image names read from the bare --image
	for _, s := range f.All() {
		ref := refs[s.Name]
		switch {
		case ref != "":
		case single != "":
			ref = single
			bySingle[s.ReleaseImageName()] = true
		default:
			ref = "docker://" + s.Image
		}
		src, err := imageSource(ref)
		if err != nil {
			return cliutil.Usage(fmt.Errorf("release: %w", err))
		}
		srcs[s.Name] = src
	}
	if len(bySingle) > 1 {
		return cliutil.Usage(fmt.Errorf("release: --image %s: the services use %d images; name the service of each (--image SERVICE=SRC)", single, len(bySingle)))
	}
	prog := newProgress(env.Stderr, o.quiet)
	defer prog.finish()
	res, err := r.Release(ctx, bundler.ReleaseOptions{
		Fleet: o.fleet, Images: srcs, Signers: signers, Roots: o.roots, Now: o.now,
		Lifetime: o.expires, SourceCommit: o.sourceCommit, AllowDirty: o.allowDirty, Progress: prog.update,
		SecretsIdentity: o.secretsID, ResetVersion: o.resetVersion,
	})
	prog.finish()
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	changed := strings.Join(res.NodesChanged, ", ")
	if changed == "" {
		changed = "none"
	}
	fmt.Fprintf(env.Stdout, "release %d published: commit %s\n", res.Version, shortID(res.Commit.String()))
	for _, im := range res.Images {
		what := "reused"
		if im.New {
			what = fmt.Sprintf("%d of %d chunks new (%s)", im.NewChunks, im.Chunks, humanBytes(im.NewBytes))
		}
		if len(res.Images) == 1 {
			fmt.Fprintf(env.Stdout, "  image %s: %s\n", im.Digest, what)
		} else {
			fmt.Fprintf(env.Stdout, "  image %s %s: %s\n", im.Name, im.Digest, what)
		}
	}
	fmt.Fprintf(env.Stdout, "  nodes changed: %s\n  signed by %s\n  pushed %s\n", changed,
		strings.Join(shortIDs(res.Signatures.Valid), ", "), humanBytes(res.PackBytes))
	return nil
}

// imageSource parses --image.
func imageSource(ref string) (image.Source, error) {
	if name, ok := strings.CutPrefix(ref, "docker://"); ok {
		c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("docker: %w", err)
		}
		return image.Engine(c, name), nil
	}
	return image.ParseSource(ref)
}

// loadSigners loads key files and KMS URIs.
func loadSigners(ctx context.Context, refs []string, pw passwords) ([]signature.Signer, error) {
	var out []signature.Signer
	for _, ref := range refs {
		if strings.Contains(ref, "://") {
			sv, err := kms.Get(ctx, ref, crypto.SHA256)
			if err != nil {
				return nil, fmt.Errorf("kms key %s: %w", ref, err)
			}
			out = append(out, sv)
			continue
		}
		k, err := loadSigningKey(ref, pw)
		if err != nil {
			return nil, err
		}
		out = append(out, k.sv)
	}
	return out, nil
}

// progress draws a bar on a terminal and prints plain lines otherwise.
type progress struct {
	w     io.Writer
	quiet bool
	tty   bool
	stage string
	bar   *progressbar.ProgressBar
	last  time.Time
}

func newProgress(w io.Writer, quiet bool) *progress {
	p := &progress{w: w, quiet: quiet}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

var stageNames = map[string]string{"scan": "scanning image", "push": "pushing chunks"}

func (p *progress) update(stage string, done, total int64) {
	if p.quiet {
		return
	}
	if stage != p.stage {
		p.finish()
		p.stage = stage
		if p.tty {
			p.bar = progressbar.DefaultBytes(total, stageNames[stage])
		} else {
			fmt.Fprintf(p.w, "%s: %s\n", stageNames[stage], humanBytes(total))
		}
	}
	if p.bar != nil {
		p.bar.Set64(done)
	} else if done == total || time.Since(p.last) > 5*time.Second {
		p.last = time.Now()
		fmt.Fprintf(p.w, "%s: %s of %s\n", stageNames[stage], humanBytes(done), humanBytes(total))
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
		fmt.Fprintln(p.w)
		p.bar = nil
	}
}
