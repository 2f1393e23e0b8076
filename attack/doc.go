// Package attack holds the adversarial test suite, organised by attack class: one file per class.
package attack
