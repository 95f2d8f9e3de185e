"""Physical data: materials (xraylib), X-ray spectra (spekpy), radionuclides, collimators."""
