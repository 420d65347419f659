"""Object detection (paper sections 4.2, A.2): work in progress; so far the box-regression
loss inputs (`tasks/det/boxes.py`)."""
