"""The digital patient: analytic shapes and the femoral-implant case."""
