"""What the study finds, from the collected tables and the law fits."""
