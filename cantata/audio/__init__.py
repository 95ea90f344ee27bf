"""Audio in and out: encoding generated audio for delivery and decoding user-supplied audio."""
