# ruff: noqa: E501
"""Real stdouts of DNN_NeuroSim V1.3 (the bundled hwcomponents-neurosim source, built by cimtool) on
rram_seed003's chip (R_on 234 MΩ, R_off 418 GΩ, cellBit 4, 256 ADC levels, 0.2 V) with 16x16
subarrays, kept so that parsing tests run without NeuroSim: the default 64→10 head (8/8 bits), whole,
and mnist_cnn (4/8 bits, trained one epoch on mnist5k), its chip summary."""

HEAD = """\
------------------------------ FloorPlan --------------------------------

Tile and PE size are optimized to maximize memory utilization ( = memory mapped by synapse / total memory on chip)

Desired Conventional Mapped Tile Storage Size: 64x64
Desired Conventional PE Storage Size: 32x32
Desired Novel Mapped Tile Storage Size: 1x32x32
User-defined SubArray Size: 16x16

----------------- # of tile used for each layer -----------------
layer1: 2

----------------- Speed-up of each layer ------------------
layer1: 1

----------------- Utilization of each layer ------------------
layer1: 0.625
Memory Utilization of Whole Chip: 62.5 %

---------------------------- FloorPlan Done ------------------------------



-------------------------------------- Hardware Performance --------------------------------------
-------------------- Estimation of Layer 1 ----------------------
layer1's readLatency is: 1.27822e+06ns
layer1's readDynamicEnergy is: 420.33pJ
layer1's leakagePower is: 0.504571uW
layer1's leakageEnergy is: 0pJ
layer1's buffer latency is: 320641ns
layer1's buffer readDynamicEnergy is: 12.2807pJ
layer1's ic latency is: 84346.5ns
layer1's ic readDynamicEnergy is: 30.0531pJ

************************ Breakdown of Latency and Dynamic Energy *************************

----------- ADC (or S/As and precharger for SRAM) readLatency is : 317540ns
----------- Accumulation Circuits (subarray level: adders, shiftAdds; PE/Tile/Global level: accumulation units) readLatency is : 545772ns
----------- Other Peripheries (e.g. decoders, mux, switchmatrix, buffers, IC, pooling and activation units) readLatency is : 414910ns
----------- ADC (or S/As and precharger for SRAM) readDynamicEnergy is : 263.628pJ
----------- Accumulation Circuits (subarray level: adders, shiftAdds; PE/Tile/Global level: accumulation units) readDynamicEnergy is : 65.1062pJ
----------- Other Peripheries (e.g. decoders, mux, switchmatrix, buffers, IC, pooling and activation units) readDynamicEnergy is : 91.5954pJ

************************ Breakdown of Latency and Dynamic Energy *************************

------------------------------ Summary --------------------------------

ChipArea : 118173um^2
Chip total CIM array : 47.5791um^2
Total IC Area on chip (Global and Tile/PE local): 0um^2
Total ADC (or S/As and precharger for SRAM) Area on chip : 73118.4um^2
Total Accumulation Circuits (subarray level: adders, shiftAdds; PE/Tile/Global level: accumulation units) on chip : 1469.86um^2
Other Peripheries (e.g. decoders, mux, switchmatrix, buffers, pooling and activation units) : 43537.3um^2

Chip clock period is: 4961.56ns
Chip layer-by-layer readLatency (per image) is: 1.27822e+06ns
Chip total readDynamicEnergy is: 420.33pJ
Chip total leakage Energy is: 0pJ
Chip total leakage Power is: 0.504571uW
Chip buffer readLatency is: 320641ns
Chip buffer readDynamicEnergy is: 12.2807pJ
Chip ic readLatency is: 84346.5ns
Chip ic readDynamicEnergy is: 30.0531pJ

************************ Breakdown of Latency and Dynamic Energy *************************

----------- ADC (or S/As and precharger for SRAM) readLatency is : 317540ns
----------- Accumulation Circuits (subarray level: adders, shiftAdds; PE/Tile/Global level: accumulation units) readLatency is : 545772ns
----------- Other Peripheries (e.g. decoders, mux, switchmatrix, buffers, IC, pooling and activation units) readLatency is : 414910ns
----------- ADC (or S/As and precharger for SRAM) readDynamicEnergy is : 263.628pJ
----------- Accumulation Circuits (subarray level: adders, shiftAdds; PE/Tile/Global level: accumulation units) readDynamicEnergy is : 65.1062pJ
----------- Other Peripheries (e.g. decoders, mux, switchmatrix, buffers, IC, pooling and activation units) readDynamicEnergy is : 91.5954pJ

************************ Breakdown of Latency and Dynamic Energy *************************


----------------------------- Performance -------------------------------
Energy Efficiency TOPS/W (Layer-by-Layer Process): 2.49609
Throughput TOPS (Layer-by-Layer Process): 1.00139e-06
Throughput FPS (Layer-by-Layer Process): 782.337
Compute efficiency TOPS/mm^2 (Layer-by-Layer Process): 8.47394e-06
-------------------------------------- Hardware Performance Done --------------------------------------

------------------------------ Simulation Performance --------------------------------
Total Run-time of NeuroSim: 0 seconds
------------------------------ Simulation Performance --------------------------------
"""

CNN_SUMMARY = """\
------------------------------ Summary --------------------------------

ChipArea : 1.1023e+07um^2
Chip total CIM array : 5923.6um^2
Total IC Area on chip (Global and Tile/PE local): 256855um^2
Total ADC (or S/As and precharger for SRAM) Area on chip : 9.10323e+06um^2
Total Accumulation Circuits (subarray level: adders, shiftAdds; PE/Tile/Global level: accumulation units) on chip : 119287um^2
Other Peripheries (e.g. decoders, mux, switchmatrix, buffers, pooling and activation units) : 1.53769e+06um^2

Chip clock period is: 4961.56ns
Chip layer-by-layer readLatency (per image) is: 3.05201e+08ns
Chip total readDynamicEnergy is: 339732pJ
Chip total leakage Energy is: 1.21437e+07pJ
Chip total leakage Power is: 46.1029uW
Chip buffer readLatency is: 1.46283e+08ns
Chip buffer readDynamicEnergy is: 9023.06pJ
Chip ic readLatency is: 5.44724e+07ns
Chip ic readDynamicEnergy is: 125928pJ

************************ Breakdown of Latency and Dynamic Energy *************************

----------- ADC (or S/As and precharger for SRAM) readLatency is : 2.65741e+07ns
----------- Accumulation Circuits (subarray level: adders, shiftAdds; PE/Tile/Global level: accumulation units) readLatency is : 7.29548e+07ns
----------- Other Peripheries (e.g. decoders, mux, switchmatrix, buffers, IC, pooling and activation units) readLatency is : 2.05672e+08ns
----------- ADC (or S/As and precharger for SRAM) readDynamicEnergy is : 150295pJ
----------- Accumulation Circuits (subarray level: adders, shiftAdds; PE/Tile/Global level: accumulation units) readDynamicEnergy is : 30930.6pJ
----------- Other Peripheries (e.g. decoders, mux, switchmatrix, buffers, IC, pooling and activation units) readDynamicEnergy is : 158506pJ

************************ Breakdown of Latency and Dynamic Energy *************************


----------------------------- Performance -------------------------------
Energy Efficiency TOPS/W (Layer-by-Layer Process): 0.159956
Throughput TOPS (Layer-by-Layer Process): 7.98194e-06
Throughput FPS (Layer-by-Layer Process): 3.27653
Compute efficiency TOPS/mm^2 (Layer-by-Layer Process): 7.24118e-07
-------------------------------------- Hardware Performance Done --------------------------------------
"""
