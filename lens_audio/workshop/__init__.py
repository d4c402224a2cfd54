"""Teaching: the workshop sessions' checkers (`lens_audio.workshop.exercises`, used by `notebooks/workshop/`).

The models the sessions use are the organisms (`lens_audio.organisms`).
"""
