package kvstore

import (
	"context"

	"github.com/cockroachdb/errors"
)

// Delete purges key from the bucket (its history too) and from the view.
// A key that is not there is no error.
func (b *Bucket[T]) Delete(ctx context.Context, key string) error {
	if err := b.kv.Purge(ctx, key); err != nil {
		return errors.Wrapf(err, "deleting %s/%s", b.name, key)
	}
	b.mu.Lock()
	delete(b.items, key)
	b.mu.Unlock()
	return nil
}

// Keys lists the cached keys that pass keep.
func (b *Bucket[T]) Keys(keep func(key string, v T) bool) []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []string
	for k, v := range b.items {
		if keep(k, v.value) {
			out = append(out, k)
		}
	}
	return out
}
