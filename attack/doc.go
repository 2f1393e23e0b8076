// Package attack holds the adversarial test suite, organised by attack
// class: one file per class. Each test plays an attacker holding one
// town's valid container token, the read-only ops password, the admin
// password or nothing, against a real coordinator on a real embedded NATS
// server, and checks what the attacker can make someone else do, not only
// what it may publish itself.
package attack
