"""The method's algorithms: RDED patch selection, the projector's fit, image refinement (Eq. 7), and the
class-incremental splits of the continual evaluation."""
