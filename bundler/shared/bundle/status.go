package bundle

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// StatusFile is the report on a status branch; its signature is
// StatusFile + ".sig" next to it.
const StatusFile = "status.toml"

// ReportState classifies one node's newest status report.
type ReportState string

// Report states. Forged, unsigned and invalid reports are never trusted:
// their content is not shown.
const (
	ReportOK       ReportState = "ok"       // signed by the node's key, recent
	ReportStale    ReportState = "stale"    // signed by the node's key, older than the stale threshold
	ReportForged   ReportState = "forged"   // signed, but not by the node's status key
	ReportUnsigned ReportState = "unsigned" // no status.toml.sig
	ReportInvalid  ReportState = "invalid"  // unreadable, malformed, or about another node
	ReportMissing  ReportState = "missing"  // no status branch for the node
	ReportUnknown  ReportState = "unknown"  // a status branch for a node the release does not list
)

// Bad reports whether the state means someone wrote a report that must not
// be trusted (the CLI exits with the verification code).
func (s ReportState) Bad() bool {
	return s == ReportForged || s == ReportUnsigned || s == ReportInvalid
}

// NodeReport is one node's newest status report and what checking it found.
type NodeReport struct {
	Node    string         `json:"node"`
	Region  string         `json:"region"` // from the release manifest
	Wave    int            `json:"wave"`   // from the release manifest
	State   ReportState    `json:"state"`
	Problem string         `json:"problem,omitempty"` // why the state is not ok
	Commit  string         `json:"commit,omitempty"`  // head of the status branch
	Age     time.Duration  `json:"age_ns,omitempty"`  // now − report time (verified reports)
	Status  *schema.Status `json:"status,omitempty"`  // set only for ok and stale
}

// MaxStatusPack bounds one fetch of the status branches.
const MaxStatusPack = 64 << 20

// CheckReport reads and verifies the status report at commit id of node n's
// branch (as an agent gating its wave does): the state says whether it can
// be trusted, Status is set only when it can.
func CheckReport(st *repo.Store, n schema.ReleaseNode, id plumbing.Hash) NodeReport {
	nr := NodeReport{Node: n.Name, Region: n.Region, Wave: n.Wave, Commit: id.String()}
	checkReport(st, &nr, n, id)
	return nr
}

// checkReport fills nr's state (and Status when the report verifies) from
// the status commit id of node n.
func checkReport(st *repo.Store, nr *NodeReport, n schema.ReleaseNode, id plumbing.Hash) {
	fail := func(s ReportState, format string, args ...any) {
		nr.State, nr.Problem = s, fmt.Sprintf(format, args...)
	}
	data, err := st.ReadFile(id, StatusFile, schema.MaxStatusFileLen)
	if err != nil {
		fail(ReportInvalid, "commit %s: %v", short(id), err)
		return
	}
	sigName := schema.SigFileName(StatusFile)
	sigData, err := st.ReadFile(id, sigName, schema.MaxSignatureFileLen)
	if errors.Is(err, repo.ErrNotFound) {
		fail(ReportUnsigned, "commit %s: no %s", short(id), sigName)
		return
	}
	if err != nil {
		fail(ReportInvalid, "commit %s: %v", short(id), err)
		return
	}
	if err := VerifyStatusSignature(n, data, sigData); err != nil {
		var fe *ForgedError
		if errors.As(err, &fe) {
			fail(ReportForged, "commit %s: %v", short(id), err)
		} else {
			fail(ReportInvalid, "commit %s: %v", short(id), err)
		}
		return
	}
	s, err := schema.ParseStatus(StatusFile, data)
	if err != nil {
		fail(ReportInvalid, "commit %s: %v", short(id), err)
		return
	}
	if s.Node != n.Name {
		fail(ReportInvalid, "commit %s: report about node %q on the branch of %q", short(id), s.Node, n.Name)
		return
	}
	nr.State, nr.Status = ReportOK, s
}

// ForgedError is a status signature that is well-formed but not a valid
// signature by the node's status key.
type ForgedError struct {
	Node   string
	KeyID  string // the key the signature claims
	Reason string
}

func (e *ForgedError) Error() string {
	return fmt.Sprintf("status of node %s: signature by key %s: %s", e.Node, shortHex(e.KeyID), e.Reason)
}

// VerifyStatusSignature checks sig (status.toml.sig) over data
// (status.toml) against node n of a verified manifest: exactly one
// signature, whose key id is n.StatusKeyID and which verifies with
// n.StatusKey. A signature by any other key, or one that does not verify,
// is a *ForgedError; a malformed signature file another error.
func VerifyStatusSignature(n schema.ReleaseNode, data, sig []byte) error {
	sigs, err := schema.ParseSignatures(schema.SigFileName(StatusFile), sig)
	if err != nil {
		return fmt.Errorf("status of node %s: %w", n.Name, err)
	}
	if len(sigs.Signatures) != 1 {
		return fmt.Errorf("status of node %s: %d signatures, want exactly one", n.Name, len(sigs.Signatures))
	}
	s := sigs.Signatures[0]
	if s.KeyID != n.StatusKeyID {
		return &ForgedError{Node: n.Name, KeyID: s.KeyID, Reason: "not the node's status key " + shortHex(n.StatusKeyID)}
	}
	key, err := schema.NewRootKey([]byte(n.StatusKey))
	if err != nil {
		return fmt.Errorf("status of node %s: status_key: %w", n.Name, err)
	}
	if key.ID != n.StatusKeyID {
		return fmt.Errorf("status of node %s: status_key has id %s, manifest says %s", n.Name, shortHex(key.ID), shortHex(n.StatusKeyID))
	}
	// A one-key root with threshold 1 is exactly "this key signed": it
	// reuses the strict DER and algorithm checks of release signatures.
	one := &schema.Root{Version: 1, Expires: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), Threshold: 1, Keys: []schema.RootKey{key}}
	res, err := schema.VerifyThreshold(one, data, sigs)
	var te *schema.ThresholdError
	if errors.As(err, &te) {
		reason := schema.ReasonInvalid
		if len(res.Checks) == 1 {
			reason = res.Checks[0].Reason
		}
		return &ForgedError{Node: n.Name, KeyID: s.KeyID, Reason: reason}
	}
	if err != nil {
		return fmt.Errorf("status of node %s: %w", n.Name, err)
	}
	return nil
}

// CheckSequence refuses the verified report nr (at commit id of node n's
// branch) when its sequence is not above that of the report at seenRef in
// st, the newest one this reader verified before: an older genuine report
// put back at the head of the branch. It then clears nr.Status and marks nr
// invalid. Otherwise it moves seenRef to id.
func CheckSequence(st *repo.Store, nr *NodeReport, n schema.ReleaseNode, id plumbing.Hash, seenRef string) {
	if nr.Status == nil {
		return
	}
	seen, err := st.Ref(seenRef)
	if err == nil && seen != id {
		if prev := CheckReport(st, n, seen); prev.Status != nil && prev.Status.Sequence >= nr.Status.Sequence {
			nr.Problem = fmt.Sprintf("commit %s: report %d is not newer than report %d seen before (commit %s): an older report put back, refused",
				short(id), nr.Status.Sequence, prev.Status.Sequence, short(seen))
			nr.State, nr.Status = ReportInvalid, nil
			return
		}
	}
	if seen != id {
		_ = st.SetRef(seenRef, seen, id) // a lost race only forgets one report
	}
}

// NewerReport orders two status heads a and b of node n by their reports:
// the higher sequence, then the later time; a report signed by the node's
// status key beats one that is not (unsigned, forged, unreadable), and two
// such are a tie (0). It is how a mirror settles two diverged heads and how
// a reader of several status repositories picks a node's report.
func NewerReport(st *repo.Store, n schema.ReleaseNode, a, b plumbing.Hash) int {
	sa, sb := CheckReport(st, n, a).Status, CheckReport(st, n, b).Status
	switch {
	case sa == nil && sb == nil:
		return 0
	case sb == nil:
		return 1
	case sa == nil:
		return -1
	case sa.Sequence != sb.Sequence:
		if sa.Sequence > sb.Sequence {
			return 1
		}
		return -1
	default:
		return sa.Time.Compare(sb.Time)
	}
}

// NewestReport is, of the status heads ids of node n found in several status
// repositories (zero ones are skipped), the one NewerReport puts first; on a
// tie the earlier in ids. Zero when every id is zero.
func NewestReport(st *repo.Store, n schema.ReleaseNode, ids []plumbing.Hash) plumbing.Hash {
	var best plumbing.Hash
	for _, id := range ids {
		if id.IsZero() || id == best {
			continue
		}
		if best.IsZero() || NewerReport(st, n, id, best) > 0 {
			best = id
		}
	}
	return best
}
