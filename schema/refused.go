package schema

import "errors"

// ErrRefused marks an error that refuses what a repository offered: a
// signature, digest, trust-root, freshness or rollback check failed. The
// CLIs map it, and only it, to exit code 3; a network or I/O failure never
// carries it. Test with errors.Is.
var ErrRefused = errors.New("refused")

// Refused marks err as a refusal ([ErrRefused]) without changing its
// message. It returns nil for a nil err.
func Refused(err error) error {
	if err == nil {
		return nil
	}
	return refusal{err}
}

type refusal struct{ err error }

func (r refusal) Error() string        { return r.err.Error() }
func (r refusal) Unwrap() error        { return r.err }
func (r refusal) Is(target error) bool { return target == ErrRefused }
