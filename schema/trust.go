package schema

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrExpired marks a trust root that has expired: it verifies nothing until
// a newer root replaces it.
var ErrExpired = Refused(errors.New("trust root expired"))

// Why a signature did not count towards a threshold.
const (
	ReasonUnknownKey  = "unknown"                // key id not in the root
	ReasonCounted     = "counted already"        // the key already counted once
	ReasonInvalid     = "signature invalid"      // does not verify over the data
	ReasonAlgMismatch = "algorithm mismatch"     // entry's algorithm is not the key's
	ReasonBadKey      = "public key in root bad" // unreachable for a validated root
)

// SignatureCheck is the outcome for one entry of a signature file.
type SignatureCheck struct {
	KeyID     string
	Algorithm string
	Counted   bool   // the signature verified and its key counted
	Reason    string // why not, when !Counted: one of the Reason* strings
}

// ThresholdResult says which signatures counted towards a root's threshold.
type ThresholdResult struct {
	RootVersion int64
	Threshold   int
	Valid       []string         // distinct key ids that counted, in file order
	Checks      []SignatureCheck // one per signature, in file order
	Missing     []string         // the root's key ids that did not sign validly, in root order
}

// Met reports whether enough distinct keys counted.
func (r *ThresholdResult) Met() bool { return len(r.Valid) >= r.Threshold }

// Summary is "K of T required signatures valid".
func (r *ThresholdResult) Summary() string {
	return fmt.Sprintf("%d of %d required signatures valid", len(r.Valid), r.Threshold)
}

// ThresholdError is the failure of [VerifyThreshold]: too few distinct keys
// of the root signed. Its message lists every signature that did not count
// and why.
type ThresholdError struct {
	Result *ThresholdResult
}

// Is makes a ThresholdError a refusal ([ErrRefused]).
func (e *ThresholdError) Is(target error) bool { return target == ErrRefused }

func (e *ThresholdError) Error() string {
	var b strings.Builder
	b.WriteString(e.Result.Summary())
	sep := ": "
	for _, c := range e.Result.Checks {
		if c.Counted {
			continue
		}
		fmt.Fprintf(&b, "%skey %s %s", sep, short(c.KeyID), c.Reason)
		sep = "; "
	}
	if len(e.Result.Checks) == 0 {
		b.WriteString(": no signatures")
	}
	if len(e.Result.Missing) > 0 {
		ids := make([]string, len(e.Result.Missing))
		for i, id := range e.Result.Missing {
			ids[i] = short(id)
		}
		fmt.Fprintf(&b, " (not signed by root %d's key(s) %s)", e.Result.RootVersion, strings.Join(ids, ", "))
	}
	return b.String()
}

// VerifyThreshold checks sigs over data against root's keys. Each distinct
// key of the root whose signature verifies counts once, however often it
// appears; unknown keys, repeats and bad signatures are noted and skipped,
// so they do not spoil enough valid ones. It fails with a *ThresholdError
// when fewer than root.Threshold keys count, and with another error when
// root itself is invalid. It does not look at the root's expiry: callers
// that trust a root now use [VerifySigned]; chain walking (where an older
// root may have expired) uses this directly.
func VerifyThreshold(root *Root, data []byte, sigs *SignatureFile) (*ThresholdResult, error) {
	if err := root.Validate(); err != nil {
		return nil, fmt.Errorf("root %d: %w", root.Version, err)
	}
	res := &ThresholdResult{RootVersion: root.Version, Threshold: root.Threshold}
	counted := make(map[string]bool)
	var entries []Signature
	if sigs != nil {
		entries = sigs.Signatures
	}
	for _, s := range entries {
		c := SignatureCheck{KeyID: s.KeyID, Algorithm: s.Algorithm}
		c.Reason = checkOne(root, s, data)
		if c.Reason == "" && counted[s.KeyID] {
			c.Reason = ReasonCounted
		}
		if c.Reason == "" {
			c.Counted = true
			counted[s.KeyID] = true
			res.Valid = append(res.Valid, s.KeyID)
		}
		res.Checks = append(res.Checks, c)
	}
	if !res.Met() {
		for _, k := range root.Keys {
			if !counted[k.ID] {
				res.Missing = append(res.Missing, k.ID)
			}
		}
		return res, &ThresholdError{Result: res}
	}
	return res, nil
}

// checkOne returns "" when s is a valid signature over data by a key of
// root, else the reason it is not.
func checkOne(root *Root, s Signature, data []byte) string {
	k, ok := root.Key(s.KeyID)
	if !ok {
		return ReasonUnknownKey
	}
	if k.Algorithm != s.Algorithm {
		return ReasonAlgMismatch
	}
	pub, err := k.parse()
	if err != nil {
		return ReasonBadKey
	}
	v, err := newVerifier(pub, k.Algorithm)
	if err != nil {
		return ReasonBadKey
	}
	raw, err := s.Bytes()
	if err != nil {
		return ReasonInvalid
	}
	if verifySignature(v, k.Algorithm, raw, data) != nil {
		return ReasonInvalid
	}
	return ""
}

// VerifySigned is the signature layer both the bundler and the agent use
// for every signed file: it parses sig (the bytes of name's .sig file) and
// checks that a threshold of root's keys signed data, and that root has not
// expired at now (an error wrapping [ErrExpired]). Errors name the file.
// Manifest-level rules (version, expiry, hash chain) are the caller's.
func VerifySigned(root *Root, name string, data, sig []byte, now time.Time) (*ThresholdResult, error) {
	if err := root.CheckExpiry(now); err != nil {
		return nil, fmt.Errorf("verify %s: %w", name, err)
	}
	sigs, err := ParseSignatures(SigFileName(name), sig)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", name, err)
	}
	res, err := VerifyThreshold(root, data, sigs)
	if err != nil {
		return res, fmt.Errorf("verify %s: %w", name, err)
	}
	return res, nil
}

// SignedFile is a file's name, its exact bytes and the bytes of its .sig.
type SignedFile struct {
	Name string
	Data []byte
	Sig  []byte
}

// VerifyRootUpdate checks that next (root-(N+1).toml and its .sig) may
// follow the trusted root prev: its version is prev.Version+1, and its
// signatures meet both prev's threshold with prev's keys and its own
// threshold with its own keys. Expiry is not checked. It returns the parsed
// next root.
func VerifyRootUpdate(prev *Root, next SignedFile) (*Root, error) {
	// The signatures by prev's keys are checked over the raw bytes before
	// the new root is parsed: nothing of an unverified root reaches the
	// TOML parser.
	sigs, err := ParseSignatures(SigFileName(next.Name), next.Sig)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", next.Name, err)
	}
	if _, err := VerifyThreshold(prev, next.Data, sigs); err != nil {
		return nil, fmt.Errorf("verify %s: signatures by root %d's keys: %w", next.Name, prev.Version, err)
	}
	r, err := ParseRoot(next.Name, next.Data)
	if err != nil {
		return nil, fmt.Errorf("verify root: %w", err)
	}
	if r.Version != prev.Version+1 {
		return nil, fmt.Errorf("verify %s: version %d cannot follow root %d (want version %d; versions must be consecutive)",
			next.Name, r.Version, prev.Version, prev.Version+1)
	}
	if _, err := VerifyThreshold(r, next.Data, sigs); err != nil {
		return nil, fmt.Errorf("verify %s: signatures by its own keys: %w", next.Name, err)
	}
	return r, nil
}

// VerifyRootChain walks from the pinned root (trusted out of band) through
// next, which must hold root-(N+1), root-(N+2), … in order with no gaps,
// accepting each as [VerifyRootUpdate] does. Roots on the way may have
// expired (as in TUF: they only vouch for their successor); the newest must
// not have at now (an error wrapping [ErrExpired]). It returns the newest
// trusted root, which is pinned itself when next is empty.
func VerifyRootChain(pinned *Root, next []SignedFile, now time.Time) (*Root, error) {
	if err := pinned.Validate(); err != nil {
		return nil, fmt.Errorf("pinned root: %w", err)
	}
	cur := pinned
	for _, f := range next {
		r, err := VerifyRootUpdate(cur, f)
		if err != nil {
			return nil, err
		}
		cur = r
	}
	if err := cur.CheckExpiry(now); err != nil {
		return nil, err
	}
	return cur, nil
}

// Verifier checks signed files against one trusted root: the value the
// bundler's verify and the agent hold after walking the root chain.
type Verifier struct {
	Root *Root
	// Now is the clock expiry is checked against; nil means time.Now.
	Now func() time.Time
}

// Verify is [VerifySigned] with v's root and clock.
func (v *Verifier) Verify(name string, data, sig []byte) (*ThresholdResult, error) {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	return VerifySigned(v.Root, name, data, sig, now())
}

// RootChainAfter picks from files (root/root-N.toml entries of a release
// tree, in any order; names may carry a directory) those with N > after,
// sorted by N, ready for [VerifyRootChain]. A name that is not exactly
// root-N.toml for a positive N is an error, and so is N twice; gaps are left
// for VerifyRootChain to refuse.
func RootChainAfter(files []SignedFile, after int64) ([]SignedFile, error) {
	type entry struct {
		n int64
		f SignedFile
	}
	var picked []entry
	seen := make(map[int64]bool)
	for _, f := range files {
		base := f.Name
		if i := strings.LastIndexByte(base, '/'); i >= 0 {
			base = base[i+1:]
		}
		num, ok := strings.CutPrefix(base, "root-")
		num, ok2 := strings.CutSuffix(num, ".toml")
		n, err := strconv.ParseInt(num, 10, 64)
		if !ok || !ok2 || err != nil || n < 1 || RootFileName(n) != base {
			return nil, fmt.Errorf("root chain: %q is not named root-N.toml", f.Name)
		}
		if seen[n] {
			return nil, fmt.Errorf("root chain: root %d given twice", n)
		}
		seen[n] = true
		if n > after {
			picked = append(picked, entry{n, f})
		}
	}
	sort.Slice(picked, func(i, j int) bool { return picked[i].n < picked[j].n })
	out := make([]SignedFile, len(picked))
	for i, e := range picked {
		out[i] = e.f
	}
	return out, nil
}
