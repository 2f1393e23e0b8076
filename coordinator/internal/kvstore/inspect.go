package kvstore

// Each calls f with every cached value, under the read lock: f must not
// call back into the bucket.
func (b *Bucket[T]) Each(f func(T)) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, v := range b.items {
		f(v.value)
	}
}

// Len is how many keys the cache holds.
func (b *Bucket[T]) Len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.items)
}

// Name is the bucket's name in JetStream.
func (b *Bucket[T]) Name() string { return b.name }

// WriteErrors counts the writes the store failed (not a lost
// compare-and-set that was retried).
func (b *Bucket[T]) WriteErrors() uint64 { return b.writeErrors.Load() }
