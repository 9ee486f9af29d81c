package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/cliutil"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// repoFlags are the flags of every command that reads a release repository.
type repoFlags struct {
	repo  string
	cache string
	credFlags
}

func (f *repoFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.repo, "repo", "", "release repository: a git URL (http(s)://, git://, ssh://, file://) or a directory")
	cmd.Flags().StringVar(&f.cache, "cache", "", "local object cache (default: under the user cache directory)")
	f.credFlags.register(cmd, "", "the repository")
}

func (f *repoFlags) open(ctx context.Context) (*bundler.Repository, error) {
	if f.repo == "" {
		return nil, cliutil.Usage(errors.New("--repo is required"))
	}
	opts, err := f.options(f.repo)
	if err != nil {
		return nil, err
	}
	return bundler.Open(ctx, f.repo, f.cache, opts)
}

// credFlags say how to authenticate to one repository: files only, so no
// secret is on a command line (or in a shell history, or in ps).
type credFlags struct {
	sshKey, knownHosts, username, passwordFile, caFile string
}

// register adds the credential flags, each name after prefix ("dst-" for
// mirror's destination); whose names the repository in the help.
func (f *credFlags) register(cmd *cobra.Command, prefix, whose string) {
	fs := cmd.Flags()
	fs.StringVar(&f.sshKey, prefix+"ssh-key", "", "SSH private key file for "+whose+" (default: the SSH agent at $SSH_AUTH_SOCK)")
	fs.StringVar(&f.knownHosts, prefix+"known-hosts", "", "known_hosts file pinning the SSH host key of "+whose+" (default ~/.ssh/known_hosts)")
	fs.StringVar(&f.username, prefix+"git-username", "", "HTTP user name for "+whose)
	fs.StringVar(&f.passwordFile, prefix+"git-password-file", "", "file whose first line is the HTTP password or token for "+whose)
	fs.StringVar(&f.caFile, prefix+"ca-file", "", "PEM CA certificates trusted for "+whose+", besides the system's")
}

// options are the remote options for url.
func (f *credFlags) options(url string) (repo.Options, error) {
	c := repo.Credentials{SSHKey: f.sshKey, SSHAgent: true, KnownHosts: f.knownHosts, Username: f.username,
		PasswordFile: f.passwordFile, CAFile: f.caFile}
	return c.Options(url)
}

// loadRoot reads a pinned root file.
func loadRoot(path string) (*schema.Root, error) {
	if path == "" {
		return nil, cliutil.Usage(errors.New("--root is required: the trust root you pin"))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read root: %w", err)
	}
	return schema.ParseRoot(path, data)
}
