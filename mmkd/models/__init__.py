"""Models: the frozen teacher, the multilingual student with its projection heads, the student's
vocabulary and its initialisation from an existing encoder (`mmkd init-student`)."""
