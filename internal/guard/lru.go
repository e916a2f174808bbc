package guard

// lru is a map with a fixed maximum size that evicts the least recently
// used entry. It keeps state about outsiders (client IPs, networks, IP and
// account pairs, failing usernames), whose keys an attacker chooses: a
// botnet of a million addresses must not grow the guard's memory without
// bound.
//
// Entries live in one slice linked by index, so a full lru reuses the slot
// of the entry it evicts and steady-state churn does not allocate. Not safe
// for concurrent use: the guard's lock protects it.
type lru[K comparable, V any] struct {
	max   int
	index map[K]int32
	nodes []lruNode[K, V]
	head  int32 // most recently used; -1 when empty
	tail  int32 // least recently used; -1 when empty
}

type lruNode[K comparable, V any] struct {
	key        K
	val        V
	prev, next int32
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, index: make(map[K]int32), head: -1, tail: -1}
}

// get returns the value for k, creating a zero value (and evicting the least
// recently used entry when full) if k is absent. The pointer is valid until
// the next get on this lru.
func (l *lru[K, V]) get(k K) *V {
	if i, ok := l.index[k]; ok {
		l.toFront(i)
		return &l.nodes[i].val
	}
	var i int32
	if len(l.nodes) < l.max {
		l.nodes = append(l.nodes, lruNode[K, V]{key: k})
		i = int32(len(l.nodes) - 1)
	} else {
		i = l.tail
		l.unlink(i)
		delete(l.index, l.nodes[i].key)
		l.nodes[i] = lruNode[K, V]{key: k}
	}
	l.pushFront(i)
	l.index[k] = i
	return &l.nodes[i].val
}

// lookup returns the value for k, or nil; it does not create an entry.
func (l *lru[K, V]) lookup(k K) *V {
	i, ok := l.index[k]
	if !ok {
		return nil
	}
	l.toFront(i)
	return &l.nodes[i].val
}

// peek returns the value for k, or nil, without making it the most
// recently used: for readers that must not change what is evicted.
func (l *lru[K, V]) peek(k K) *V {
	i, ok := l.index[k]
	if !ok {
		return nil
	}
	return &l.nodes[i].val
}

func (l *lru[K, V]) len() int { return len(l.index) }

func (l *lru[K, V]) toFront(i int32) {
	if l.head == i {
		return
	}
	l.unlink(i)
	l.pushFront(i)
}

func (l *lru[K, V]) unlink(i int32) {
	n := &l.nodes[i]
	if n.prev >= 0 {
		l.nodes[n.prev].next = n.next
	} else {
		l.head = n.next
	}
	if n.next >= 0 {
		l.nodes[n.next].prev = n.prev
	} else {
		l.tail = n.prev
	}
	n.prev, n.next = -1, -1
}

func (l *lru[K, V]) pushFront(i int32) {
	n := &l.nodes[i]
	n.prev, n.next = -1, l.head
	if l.head >= 0 {
		l.nodes[l.head].prev = i
	}
	l.head = i
	if l.tail < 0 {
		l.tail = i
	}
}

// each calls fn for every entry, most recently used first, until fn
// returns false. It does not change the order.
func (l *lru[K, V]) each(fn func(k K, v *V) bool) {
	for i := l.head; i >= 0; i = l.nodes[i].next {
		if !fn(l.nodes[i].key, &l.nodes[i].val) {
			return
		}
	}
}
