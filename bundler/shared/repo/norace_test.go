//go:build !race

package repo

// raceDetector says the tests run under the race detector, which makes
// reading a million objects take minutes.
const raceDetector = false
