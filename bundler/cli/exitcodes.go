package cli

import (
	"errors"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/cliutil"
)

// Exit codes of pullship besides cliutil's.
const (
	ExitOK       = cliutil.ExitOK
	ExitFailure  = cliutil.ExitFailure
	ExitUsage    = cliutil.ExitUsage
	ExitRefused  = cliutil.ExitRefused
	ExitNoChange = 4 // release: nothing changed since the current release
)

// exitCodes is pullship's one error-to-exit-code table, listed in --help.
var exitCodes = cliutil.Codes{
	{Code: ExitOK, Meaning: "success"},
	{Code: ExitFailure, Meaning: "failure: network or I/O (the message names the remote), not found, any other"},
	{Code: ExitUsage, Meaning: "bad flags or arguments", Match: cliutil.IsUsage},
	{Code: ExitRefused, Meaning: "refused: a signature, digest, trust root, freshness or rollback check failed", Match: cliutil.IsRefused},
	{Code: ExitNoChange, Meaning: "release: nothing changed since the current release", Match: func(err error) bool {
		return errors.Is(err, bundler.ErrNothingChanged)
	}},
}
