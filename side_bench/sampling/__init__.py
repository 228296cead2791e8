"""The diffusion machinery plugins share: DDPM training and DDIM sampling with optional guidance
(diffusion), guidance classifiers (classifier).
"""
