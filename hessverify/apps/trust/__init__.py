"""Measuring hessverify itself: planted bugs it must catch, and false alarms it must not raise."""
