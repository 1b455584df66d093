-- A: queue. Wakes an idle consumer of `queue` after an enqueue Dramatiq made itself (a delayed
-- message moved on, a requeue): the same rule as `enqueue()`'s. Returns nothing.
wake(A[1])
