"""Training: one engine (optimizer, schedule, step, batched inference), the losses, the students' label sources
and training loops."""
