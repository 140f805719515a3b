"""Values from frames: payload schemas (``layout``) and their decoder (``decoder``)."""
