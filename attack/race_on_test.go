//go:build race

package attack_test

// raceDetector is whether the tests run under -race: the race detector
// makes crypto ten times slower, on both sides of a callout.
const raceDetector = true
