package schema

import (
	"testing"

	"github.com/pullship/pullship/bundler/shared/deptest"
)

// TestSchemaDeps: the formats reach no network, process, git or engine
// code, so both sides can parse and check them anywhere, fuzzers included.
func TestSchemaDeps(t *testing.T) {
	deptest.Check(t, ".", []deptest.Rule{
		{Path: "net/http", Why: "network code"},
		{Path: "os/exec", Why: "runs processes"},
		{Path: "github.com/go-git", Why: "the git layer"},
		{Path: "github.com/docker", Why: "the engine client"},
		{Path: "github.com/pullship/pullship/agent", Why: "the host side"},
		{Path: "github.com/pullship/pullship/bundler", Why: "the release side"},
	})
}
