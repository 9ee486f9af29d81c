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
}

func (f *repoFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.repo, "repo", "", "release repository: a git URL (http(s)://, git://, ssh://, file://) or a directory")
	cmd.Flags().StringVar(&f.cache, "cache", "", "local object cache (default: under the user cache directory)")
}

func (f *repoFlags) open(ctx context.Context) (*bundler.Repository, error) {
	if f.repo == "" {
		return nil, cliutil.Usage(errors.New("--repo is required"))
	}
	return bundler.Open(ctx, f.repo, f.cache, repo.Options{})
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
