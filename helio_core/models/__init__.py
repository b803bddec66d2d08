"""Models: the student/teacher architectures and their checkpoints, the frozen backbones, LoRA and the projector."""
