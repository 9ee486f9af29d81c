package main

import (
	"strings"
	"testing"

	"github.com/pullship/pullship/bundler/shared/deptest"
)

// hostRules are what no package the agent ships may link: the release
// writer (only bundler/shared is the read side both binaries use), the
// template engines (the agent never renders a template), diff libraries
// (go-git's plumbing/object imports one, so the git layer decodes trees,
// commits and tags itself), KMS and Vault clients (signing keys live on the
// release side), the compose reader and the release CLI's framework.
var hostRules = []deptest.Rule{
	{Path: "github.com/pullship/pullship/bundler", Why: "the release writer", Except: []string{"github.com/pullship/pullship/bundler/shared"}},
	{Path: "github.com/pullship/pullship/bundler/shared/deptest", Why: "test code"},
	{Path: "text/template", Why: "a template engine"},
	{Path: "html/template", Why: "a template engine"},
	{Path: "github.com/sergi/go-diff", Why: "a diff library"},
	{Path: "github.com/pmezard/go-difflib", Why: "a diff library"},
	{Path: "github.com/go-git/go-git/v5/utils/diff", Why: "a diff library"},
	{Path: "github.com/go-git/go-git/v5/plumbing/format/diff", Why: "a diff library"},
	{Path: "github.com/go-git/go-git/v5/plumbing/object", Why: "links a diff library"},
	{Path: "github.com/sigstore/sigstore/pkg/signature/kms", Why: "a KMS client"},
	{Path: "github.com/hashicorp/vault", Why: "a KMS client"},
	{Path: "cloud.google.com/go/kms", Why: "a KMS client"},
	{Path: "github.com/aws/aws-sdk-go-v2/service/kms", Why: "a KMS client"},
	{Path: "github.com/Azure/azure-sdk-for-go/sdk/security/keyvault", Why: "a KMS client"},
	{Path: "github.com/compose-spec", Why: "the compose reader (release side)"},
	{Path: "go.yaml.in/yaml", Why: "the compose file's YAML parser (release side)"},
	{Path: "github.com/spf13/cobra", Why: "the release CLI's framework"},
}

// TestAgentDeps: pullship-agent links nothing the host side must not have,
// and no test code (the fake engine, the crash tests' hooks).
func TestAgentDeps(t *testing.T) {
	deptest.Check(t, ".", append(hostRules,
		deptest.Rule{Path: "testing", Why: "test code"},
		deptest.Rule{Path: "github.com/pullship/pullship/agent/engine/enginetest", Why: "test code"}))
}

// TestAgentPackagesDeps: no package under agent/ does either, whether the
// shipped binary imports it today or not; the bench harness, which plays
// the release side too, is the one exception.
func TestAgentPackagesDeps(t *testing.T) {
	n := 0
	for _, p := range deptest.Deps(t, "github.com/pullship/pullship/agent/...") {
		if !strings.HasPrefix(p, "github.com/pullship/pullship/agent") || strings.HasPrefix(p, "github.com/pullship/pullship/agent/internal/agentbench") {
			continue
		}
		n++
		for _, b := range deptest.Broken(deptest.Deps(t, p), hostRules) {
			t.Errorf("%s links %s", p, b)
		}
	}
	if n < 10 {
		t.Fatalf("checked %d agent packages; go list found too few", n)
	}
}
